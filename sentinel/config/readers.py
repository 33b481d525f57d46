"""Readers: a (YAML value, dotted key) pair into a typed value, or a ConfigError naming both.

Leaf module: durations, sizes, host:port, URLs, flags and the generic section builder;
`sentinel.config.load` composes them into the whole config.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection
from dataclasses import fields
from typing import Any, TypeVar, get_args
from urllib.parse import urlsplit

from sentinel.config.secrets import mask_url
from sentinel.errors import ConfigError


def parse_duration(value: object, key: str = "duration", *, allow_zero: bool = False) -> float:
    """Seconds in a duration: a number of seconds, or a string with a unit s, m, h or d.

    >>> parse_duration("1.5h")
    5400.0
    """
    match = _DURATION_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match:
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        sign = "non-negative" if allow_zero else "positive"
        raise ConfigError(key, value, f"a {sign} duration such as 30, '10s', '5m', '1.5h', '1d'")
    return seconds


# Readers turn (YAML value, dotted key) into a typed value or raise ConfigError. A spec maps
# the YAML keys of one mapping to readers; a duration key `x` fills the field `x_seconds`.
T = TypeVar("T")
Reader = Callable[[object, str], Any]
Spec = dict[str, Reader]

_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HOST_PORT_RE = re.compile(r"([^\s:\[\]]+|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})")


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


def _mapping(raw: object, path: str, known: Collection[str], required: Collection[str]) -> dict:
    """The mapping itself, once every key is known and every required key is present."""
    if not isinstance(raw, dict):
        raise ConfigError(path or "<document>", raw, "a mapping of keys to values")
    for name in raw:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(_join(path, name), name, f"one of {', '.join(known)}{hint}")
    for name in required:
        if name not in raw:
            raise ConfigError(_join(path, name), None, "a value: this key is required")
    return raw


def _build(
    cls: type[T],
    raw: object,
    path: str,
    spec: Spec,
    required: Collection[str] = (),
    **extra: object,
) -> T:
    """One dataclass from one YAML mapping; keys left out keep the dataclass's defaults."""
    mapping = _mapping(raw, path, spec, required)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {
        (name if name in names else f"{name}_seconds"): read(mapping[name], _join(path, name))
        for name, read in spec.items()
        if name in mapping
    }
    return cls(**values, **extra)


def _section(cls: type, spec: Spec, required: Collection[str] = ()) -> Reader:
    return lambda value, key: _build(cls, value, key, spec, required)


def _number(
    expected: str, ok: Callable[[float], bool] = lambda _: True, kind: type = float
) -> Reader:
    def read(value: object, key: str) -> Any:
        accepted = int if kind is int else (int, float)  # an int will do for a float
        if (
            isinstance(value, bool)
            or not isinstance(value, accepted)
            or not math.isfinite(value)
            or not ok(value)
        ):
            raise ConfigError(key, value, expected)
        return kind(value)

    return read


def _integer(minimum: int) -> Reader:
    return _number(f"an integer >= {minimum}", lambda x: x >= minimum, int)


def _duration(allow_zero: bool = False) -> Reader:
    return lambda value, key: parse_duration(value, key, allow_zero=allow_zero)


def _whole_seconds(value: object, key: str) -> int:
    seconds = parse_duration(value, key)
    if not seconds.is_integer():
        raise ConfigError(key, value, "a whole number of seconds")
    return int(seconds)


def _text(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, "a non-empty string")
    return value


def _choice(choices: object) -> Reader:
    allowed = get_args(choices)  # the choices are the Literal type the dataclass field has

    def read(value: object, key: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(key, value, f"one of {', '.join(map(repr, allowed))}")
        return value

    return read


def _list_of(item: Reader, expected: str, min_items: int = 0, max_items: int = 1 << 31) -> Reader:
    def read(value: object, key: str) -> tuple:
        if not isinstance(value, list) or not min_items <= len(value) <= max_items:
            raise ConfigError(key, value, expected)
        return tuple(item(element, f"{key}[{i}]") for i, element in enumerate(value))

    return read


def _host_port(value: object, key: str) -> str:
    match = _HOST_PORT_RE.fullmatch(value) if isinstance(value, str) else None
    if not isinstance(value, str) or not match or not 1 <= int(match[2]) <= 65535:
        raise ConfigError(key, value, "'host:port' with a port in 1..65535, e.g. '127.0.0.1:9108'")
    return value


def _servers(value: object, key: str) -> tuple[str, ...]:
    items = [server.strip() for server in value.split(",")] if isinstance(value, str) else value
    return _list_of(_host_port, "'host:port,...' or a list of 'host:port'", 1)(items, key)


def _url(value: object, key: str) -> str:
    if isinstance(value, str):
        if "@" in value.partition("://")[2].partition("/")[0]:  # user:password@ before the path
            raise ConfigError(key, mask_url(value), "a URL without credentials in it: put "
                              "them in basic_auth, with password_file or password_env")
        try:  # .port raises ValueError on a port that is not a number in range
            parts = urlsplit(value)
            if parts.scheme in ("http", "https") and parts.hostname and parts.port != 0:
                return value
        except ValueError:
            pass
        value = mask_url(value)  # an unparsable URL may hold a password with odd characters
    raise ConfigError(key, value, "an http:// or https:// URL with a host")


def _auto_or(read: Reader) -> Reader:
    """`auto` (None) or what `read` accepts."""
    return lambda value, key: None if value == "auto" else read(value, key)


_FRACTION = _number("a number in [0, 1]", lambda x: 0 <= x <= 1)
def _one_source(file: str | None, env: str | None, key: str, stem: str) -> None:
    """Exactly one of `<stem>_file` and `<stem>_env` is set."""
    if file is not None and env is not None:
        raise ConfigError(_join(key, f"{stem}_env"), env,
                          f"no value when {stem}_file is set: the secret comes from one of them")
    if file is None and env is None:
        raise ConfigError(_join(key, f"{stem}_file"), None, f"a file holding the {stem} (or "
                          f"{stem}_env: an environment variable holding it); never the value itself")


def _with_password(cls: type[T], spec: Spec) -> Reader:
    """A section with a username and a password from `password_file` or `password_env`."""
    def read(value: object, key: str) -> T:
        section = _build(cls, value, key, spec, ("username",))
        _one_source(section.password_file, section.password_env, key, "password")  # type: ignore[attr-defined]
        return section

    return read


def _flag(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value
_BYTES_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?)\s*(|[KMGT]i?B)")
_BYTE_UNITS = {"": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def _bytes(value: object, key: str) -> int:
    """A size: bytes (int) or a string with a unit, e.g. '500MB', '1GiB'."""
    match = _BYTES_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match:
        size = float(match[1]) * _BYTE_UNITS[match[2]]
    elif isinstance(value, int) and not isinstance(value, bool):
        size = float(value)
    else:
        size = 0.0
    if size < 1:
        raise ConfigError(key, value, "a positive size: bytes, or a string such as '500MB', '1GiB'")
    return int(size)
