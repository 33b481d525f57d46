"""The sale calendar file (`calendar.file`): planned events, YAML (or JSON, which is YAML).

    events:
      - name: double-11
        start: 2025-11-11T00:00:00+08:00     # RFC 3339 with a zone, or Unix seconds
        end: 2025-11-11T02:00:00+08:00       # exclusive
        services: [checkout, payment]        # or "all" (the default)
        multiplier: 8                        # expected traffic, times the usual

Every error is a ConfigError naming the file, the event (index and name) and the field.
`calendar_text` is what `sentinel calendar add|remove` write back (atomically).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from pathlib import Path

import yaml

from sentinel.config.schema import SaleEvent
from sentinel.config.yaml_file import read_yaml
from sentinel.errors import ConfigError

MAX_EVENTS = 10_000
MIN_TS, MAX_TS = 946_684_800.0, 4_102_444_800.0  # 2000..2100, as samples' ts


def read_calendar(path: str | Path) -> tuple[SaleEvent, ...]:
    """The events of a calendar file, ordered by start; () for an empty file."""
    raw = read_yaml(path)
    if raw is None:
        return ()
    if not isinstance(raw, dict) or set(raw) - {"events"}:
        raise ConfigError(f"{path}", _short(raw), "a mapping with one key, events: [...]")
    return parse_events(raw.get("events") or [], f"{path}: events")


def parse_events(raw: object, where: str) -> tuple[SaleEvent, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_EVENTS:
        raise ConfigError(where, _short(raw), f"a list of at most {MAX_EVENTS} events")
    events = [parse_event(item, f"{where}[{i}]") for i, item in enumerate(raw)]
    names = [e.name for e in events]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{where}[{i}].name", name, "a name no other event has")
    return tuple(sorted(events, key=lambda e: (e.start_ts, e.name)))


def parse_event(item: object, where: str) -> SaleEvent:
    """One event from a mapping (also a Kafka record's JSON value)."""
    if not isinstance(item, dict):
        raise ConfigError(where, _short(item), "a mapping {name, start, end, services, multiplier}")
    unknown = set(item) - {"name", "start", "end", "services", "multiplier"}
    if unknown:
        raise ConfigError(f"{where}.{sorted(map(str, unknown))[0]}", None,
                          "no such key (name, start, end, services, multiplier)")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ConfigError(f"{where}.name", name, "a non-empty name of at most 200 characters")
    where = f"{where} ({name})"
    start, end = (instant(item.get(k), f"{where}.{k}") for k in ("start", "end"))
    if end <= start:
        raise ConfigError(f"{where}.end", item.get("end"), "a time after start")
    services = item.get("services", "all")
    if services == "all":
        services = None
    elif (not isinstance(services, list) or not services
          or not all(isinstance(s, str) and s.strip() for s in services)):
        raise ConfigError(f"{where}.services", _short(services), "'all' or a list of service names")
    multiplier = item.get("multiplier", 1.0)
    if (isinstance(multiplier, bool) or not isinstance(multiplier, int | float)
            or not math.isfinite(multiplier) or not 0 < multiplier <= 1000):
        raise ConfigError(f"{where}.multiplier", multiplier, "a number in (0, 1000]")
    return SaleEvent(name, start, end, tuple(services) if services else None, float(multiplier))


def instant(value: object, key: str) -> float:
    """Unix seconds or RFC 3339 with a zone (YAML may have parsed it into a datetime)."""
    ts: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        ts = float(value)
    elif isinstance(value, datetime.datetime) and value.tzinfo is not None:
        ts = value.timestamp()
    elif isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            ts = parsed.timestamp()
    if ts is None or not MIN_TS <= ts <= MAX_TS:
        raise ConfigError(key, value, "Unix seconds or RFC 3339 with a zone, in 2000..2100, "
                                      "e.g. 2025-11-11T00:00:00+08:00")
    return ts


def event_document(event: SaleEvent) -> dict[str, object]:
    """An event as the file (and the Kafka topic) holds it."""
    return {"name": event.name, "start": _rfc3339(event.start_ts), "end": _rfc3339(event.end_ts),
            "services": list(event.services) if event.services else "all",
            "multiplier": event.multiplier}


def calendar_text(events: Iterable[SaleEvent]) -> str:
    """The file's content for `events` (`sentinel calendar add|remove` write it atomically)."""
    return yaml.safe_dump({"events": [event_document(e) for e in events]}, sort_keys=False,
                          allow_unicode=True)


def _rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
