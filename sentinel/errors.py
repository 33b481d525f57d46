"""Sentinel's small error tree; lower-layer errors are translated into these at the edge.

Every error a user can meet is importable from here (the modules that raise them import
them from here too). The CLI prints a SentinelError as one line and exits 2.
"""


class SentinelError(Exception):
    """Base of every error Sentinel raises on purpose."""


class ConfigError(SentinelError):
    """A config key has a bad value; the message names the key, the value and what is expected."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"config key '{key}': got {value!r}, expected {expected}")


class ModelError(SentinelError):
    """A model artifact is missing, corrupt, tampered with or does not match the config."""


class DataError(SentinelError):
    """Input data cannot be used (no samples, no failures to learn from, unreadable file)."""


class KafkaUnavailable(SentinelError):
    """The broker cannot be reached or refused a request; the daemon retries."""


class OutboxError(SentinelError):
    """The outbox cannot be written: alerts can no longer be queued durably (degraded)."""


class TransportError(SentinelError):
    """No HTTP response: connection refused or reset, timed out, TLS failure."""
