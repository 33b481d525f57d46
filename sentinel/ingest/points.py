"""The vocabulary shared by the foreign-format decoders: a point, and why a message is rejected.

    >>> point = Point("http_requests_total", {"job": "checkout", "code": "200"}, 1763899200.0, 1520.0)

A point is one value of one series at one time, labels as the source had them (Prometheus
labels, Telegraf tags, OpenTelemetry resource and data-point attributes together). A NaN
value is a staleness marker or a point with no recorded value: a gap, never a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from sentinel.core.samples import MAX_MESSAGE_BYTES, MAX_TS, MIN_TS, Rejection

__all__ = ["INGEST_REASONS", "MAX_FOREIGN_MESSAGE_BYTES", "Decoded", "Point", "Rejection", "check_ts"]

MAX_FOREIGN_MESSAGE_BYTES = 16 * MAX_MESSAGE_BYTES  # a Telegraf batch or an OTLP request is many points

# Why a foreign message is rejected: bounded, so each is a Prometheus label value and a
# dead-letter header (the contract format's reasons are sentinel.core.samples.REASONS).
INGEST_REASONS = (
    "too_large",
    "malformed_json",
    "malformed_protobuf",
    "not_an_object",
    "unknown_shape",
    "invalid_ts",
    "ts_out_of_range",
    "invalid_value",
    "no_points",
)


class Point(NamedTuple):
    metric: str
    labels: Mapping[str, str]
    ts: float  # Unix seconds
    value: float  # NaN: a gap (staleness marker, no recorded value)


Decoded = list[Point] | Rejection


def check_ts(ts: float | None, shown: object) -> Rejection | None:
    """None for a usable timestamp, else why not (`shown` is what the message held)."""
    if ts is None:
        return Rejection("invalid_ts", f"timestamp {str(shown)[:80]!r}")
    if not MIN_TS <= ts <= MAX_TS:
        return Rejection("ts_out_of_range", f"timestamp {ts} outside [{MIN_TS:.0f}, {MAX_TS:.0f}]"
                                            " (wrong unit?)")
    return None
