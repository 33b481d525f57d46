"""Decoding the sample contract into typed Samples or typed Rejections.

    >>> decode(b'{"service": "cart", "ts": 1763899200, "metrics": {"qps": 12.5}}')
    Sample(service='cart', ts=1763899200.0, metrics={'qps': 12.5}, gaps=())

A metric whose value is missing, non-numeric or non-finite is a *gap* (DESIGN.md), not a
reason to throw the sample away; a sample with no usable metric at all is rejected.
Decoding never raises: everything that is wrong with a message becomes a Rejection whose
`reason` is one of REASONS (a bounded set, so it can be a Prometheus label).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SERVICE_CHARS = 200
MAX_METRICS = 256
MIN_TS = 946_684_800.0  # 2000-01-01: anything earlier is a unit mistake (ms vs s) or junk
MAX_TS = 4_102_444_800.0  # 2100-01-01

REASONS = (
    "too_large",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "invalid_service",
    "invalid_ts",
    "ts_out_of_range",
    "future_ts",
    "invalid_metrics",
    "no_valid_metrics",
)


@dataclass(frozen=True, slots=True)
class Sample:
    service: str
    ts: float
    metrics: Mapping[str, float]
    gaps: tuple[str, ...] = ()  # metric names present in the message but unusable


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # one of REASONS
    detail: str


def decode(raw: bytes | str, now: float | None = None, max_future_seconds: float = 300.0
           ) -> Sample | Rejection:
    """Decode one message. With `now` given, a ts more than `max_future_seconds` ahead of it
    is rejected as ``future_ts`` (a wrong clock must not drag the watermark forward)."""
    # The limit is on bytes: a JSONL line (str) must hit it where the Kafka message would.
    size = len(raw) if isinstance(raw, bytes) or raw.isascii() else len(raw.encode(errors="replace"))
    if size > MAX_MESSAGE_BYTES:
        return Rejection("too_large", f"{size} bytes > {MAX_MESSAGE_BYTES}")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return Rejection("malformed_json", str(exc)[:200])
    if not isinstance(doc, dict):
        return Rejection("not_an_object", f"top level is {type(doc).__name__}")
    for name in ("service", "ts", "metrics"):
        if name not in doc:
            return Rejection("missing_field", f"no '{name}'")
    service = doc["service"]
    if not isinstance(service, str) or not service.strip() or len(service) > MAX_SERVICE_CHARS:
        return Rejection("invalid_service", f"service {str(service)[:80]!r}")
    ts = parse_ts(doc["ts"])
    if ts is None:
        return Rejection("invalid_ts", f"ts {str(doc['ts'])[:80]!r}")
    if not MIN_TS <= ts <= MAX_TS:
        return Rejection("ts_out_of_range", f"ts {ts} outside [{MIN_TS:.0f}, {MAX_TS:.0f}]")
    if now is not None and ts > now + max_future_seconds:
        return Rejection("future_ts", f"ts {ts} is {ts - now:.0f}s ahead of now")
    raw_metrics = doc["metrics"]
    if not isinstance(raw_metrics, dict) or len(raw_metrics) > MAX_METRICS:
        return Rejection("invalid_metrics", f"metrics {str(raw_metrics)[:80]!r}")
    metrics: dict[str, float] = {}
    gaps: list[str] = []
    for name, value in raw_metrics.items():
        number = _finite(value)
        if number is None:
            gaps.append(name)
        else:
            metrics[name] = number
    if not metrics:
        return Rejection("no_valid_metrics", f"no finite metric value in {sorted(raw_metrics)[:5]}")
    return Sample(service, ts, metrics, tuple(gaps))


def parse_ts(value: object) -> float | None:
    """Unix seconds (int/float) or an RFC 3339 string with a time zone; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _finite(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:  # RFC 3339 requires an offset; guessing one shifts alerts
            return None
        return parsed.timestamp()
    return None


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # JSON integers are unbounded: 1 followed by 400 zeros is valid
        return None
    return number if math.isfinite(number) else None


def encode(sample: Sample) -> str:
    """The contract's JSON line for a Sample (gaps are not written)."""
    return json.dumps({"service": sample.service, "ts": sample.ts, "metrics": dict(sample.metrics)},
                      separators=(",", ":"))
