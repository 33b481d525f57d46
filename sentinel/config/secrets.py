"""Secrets: read from a file or an environment variable at start-up, never shown.

    >>> source = SecretSource(file="/etc/sentinel/kafka.password")
    >>> password = read_secret(source, "kafka.sasl")      # ConfigError if missing or empty
    >>> password
    Secret('***')
    >>> password.reveal()                                   # only where a client needs it
    'hunter2'

The config never holds a secret's value, only where it comes from (`*_file` / `*_env`), so
printing, dumping or logging a config cannot leak one. The value lives in a `Secret`, whose
repr and str are masked, and is revealed only at the edge that sends it (the Kafka client,
the Authorization header, the HMAC key). URLs in the config may not carry credentials.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from sentinel.errors import ConfigError

MASK = "***"
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class SecretSource:
    """Where one secret comes from: exactly one of a file or an environment variable."""

    file: str | None = None
    env: str | None = None


class Secret:
    """A secret value; repr and str are masked so that it cannot end up in a log by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secret(source: SecretSource, key: str, prefix: str = "password") -> Secret:
    """The secret named by `source`, surrounding whitespace removed; ConfigError when missing.

    `key` is the config section (e.g. ``kafka.sasl``) and `prefix` the keys' stem, so errors
    name ``kafka.sasl.password_file``. Messages name the file or the variable, never the value.
    """
    if source.file is not None:
        file_key = f"{key}.{prefix}_file"
        try:
            with open(source.file, encoding="utf-8") as stream:
                value = stream.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(file_key, source.file,
                              f"a readable UTF-8 file holding the secret ({exc.__class__.__name__}: "
                              f"{getattr(exc, 'strerror', None) or 'not UTF-8'})") from exc
        if not value:
            raise ConfigError(file_key, source.file, "a file holding a non-empty secret")
        return Secret(value)
    if source.env is not None:
        value = os.environ.get(source.env, "").strip()
        if not value:
            raise ConfigError(f"{key}.{prefix}_env", source.env,
                              "the name of a set, non-empty environment variable holding the secret")
        return Secret(value)
    raise ConfigError(key, None, f"one of {prefix}_file or {prefix}_env")


def env_name(value: object, key: str) -> str:
    """An environment variable's name. A value that is not one is not echoed: it may be the
    secret itself, pasted into the wrong key."""
    if not isinstance(value, str) or not ENV_NAME_RE.fullmatch(value):
        shown = value if not isinstance(value, str) else MASK
        raise ConfigError(key, shown, "the name of an environment variable (letters, digits, _; "
                                      "the value is not shown in case it is the secret itself)")
    return value


def mask_url(url: str) -> str:
    """`url` with everything between the scheme and the last ``@`` masked but the user name.

    Deliberately cruder than a URL parser: a password holding ``#``, ``/`` or ``@`` confuses
    parsers, and an over-masked URL costs nothing.
    """
    scheme, separator, rest = url.partition("://")
    if "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    return f"{scheme}{separator}{userinfo.split(':', 1)[0]}:{MASK}@{host}"
