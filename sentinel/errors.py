"""Sentinel's small error tree; lower-layer errors are translated into these at the edge.

Every error a user can meet is importable from here (the modules that raise them import
them from here too). The CLI prints a SentinelError as one line and exits 2.
"""

from __future__ import annotations

import reprlib

MAX_VALUE_CHARS = 120  # of a bad value quoted in a message; the rest is summarised
MAX_MESSAGE_CHARS = 600

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = MAX_VALUE_CHARS, MAX_VALUE_CHARS, 40


def short_repr(value: object) -> str:
    """repr(value) for a message, at most about MAX_VALUE_CHARS, whatever its size or depth.

        >>> len(short_repr("x" * 10_000)) < 160
        True
    """
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an int beyond int->str's digit limit, a cycle
        text = f"<{type(value).__name__}>"
    size = len(value) if isinstance(value, str | bytes | list | dict | tuple) else None
    if size is not None and size > MAX_VALUE_CHARS:
        text += f" ({size:,} {'characters' if isinstance(value, str | bytes) else 'items'})"
    return short_text(text, MAX_VALUE_CHARS * 2)


def short_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class SentinelError(Exception):
    """Base of every error Sentinel raises on purpose."""


class ConfigError(SentinelError):
    """A config key has a bad value; the message names the key, the value and what is expected."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"config key '{short_text(key, 200)}': got {short_repr(value)}, "
                         f"expected {short_text(expected, MAX_MESSAGE_CHARS)}")


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
