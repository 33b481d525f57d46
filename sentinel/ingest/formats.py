"""Decoders of the JSON formats on Kafka: one message in, its points (or a Rejection) out.

    >>> decode = decoder_for(InputConfig(format="prometheus-kafka-adapter"))
    >>> decode(b'{"timestamp": "2025-11-23T12:00:00Z", "value": "1520", "name": "up", '
    ...        b'"labels": {"__name__": "up", "job": "checkout"}}')
    [Point(metric='up', labels={'__name__': 'up', 'job': 'checkout'}, ts=1763899200.0, value=1520.0)]

- ``prometheus-kafka-adapter`` (Telefonica/prometheus-kafka-adapter, SERIALIZATION_FORMAT=json):
  one sample per message, ``{"timestamp": RFC 3339, "value": "<float as a string>", "name":
  ..., "labels": {...}}``. The value is Prometheus's text for a float: ``NaN`` (staleness
  markers are a NaN), ``+Inf`` and ``-Inf`` included.
- ``telegraf-json`` (Telegraf's json serializer, ``data_format = "json"``): ``{"name", "tags",
  "fields", "timestamp"}``, or a batch ``{"metrics": [...]}``; the timestamp is a number in
  ``json_timestamp_units`` (`input.timestamp_units`) or, with ``json_timestamp_format``, an
  RFC 3339 string. A field becomes the series ``<name>_<field>`` (Telegraf's own Prometheus
  naming); from the ``prometheus`` measurement (the prometheus input's ``metric_version = 2``)
  the series is the field itself. Non-numeric fields are not metrics and are skipped.
- ``otlp-json``/``otlp-proto``: sentinel.ingest.otlp.

Pure: nothing here reads a clock, a file or a socket.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from sentinel.config.schema import InputConfig
from sentinel.core.samples import parse_ts
from sentinel.ingest.points import MAX_FOREIGN_MESSAGE_BYTES, Decoded, Point, Rejection, check_ts

Decoder = Callable[[bytes], Decoded]
_UNIT_SECONDS = {"1s": 1.0, "1ms": 1e-3, "1us": 1e-6, "1ns": 1e-9}


def decoder_for(config: InputConfig) -> Decoder:
    """The decoder of `config.format` (not ``sentinel``: that is sentinel.core.samples.decode)."""
    if config.format == "prometheus-kafka-adapter":
        return decode_prometheus_adapter
    if config.format == "telegraf-json":
        seconds_per_unit = _UNIT_SECONDS[config.timestamp_units]
        return lambda raw: decode_telegraf(raw, seconds_per_unit)
    if config.format in ("otlp-json", "otlp-proto"):
        from sentinel.ingest.otlp import decode_otlp_json, decode_otlp_proto

        return decode_otlp_json if config.format == "otlp-json" else decode_otlp_proto
    raise ValueError(f"no foreign decoder for format {config.format!r}")


@functools.lru_cache(maxsize=256)
def _parse_stamp(stamp: str) -> float | None:
    """parse_ts, remembered: the samples of one scrape share their timestamp."""
    return parse_ts(stamp)


def _load(raw: bytes | str) -> object | Rejection:
    if len(raw) > MAX_FOREIGN_MESSAGE_BYTES:
        return Rejection("too_large", f"{len(raw)} bytes > {MAX_FOREIGN_MESSAGE_BYTES}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return Rejection("malformed_json", str(exc)[:200])


def _string_labels(labels: object) -> dict[str, str] | None:
    if not isinstance(labels, dict):
        return None
    if all(isinstance(v, str) for v in labels.values()):
        return labels
    return {str(k): str(v) for k, v in labels.items()}


def decode_prometheus_adapter(raw: bytes | str) -> Decoded:
    """One prometheus-kafka-adapter JSON message: one sample of one series."""
    doc = _load(raw)
    if isinstance(doc, Rejection):
        return doc
    if not isinstance(doc, dict):
        return Rejection("not_an_object", f"top level is {type(doc).__name__}")
    labels = _string_labels(doc.get("labels", {}))
    name = doc.get("name") or (labels or {}).get("__name__")
    if labels is None or not isinstance(name, str) or "timestamp" not in doc or "value" not in doc:
        return Rejection("unknown_shape", "expected {timestamp, value, name, labels}, got keys "
                                          f"{sorted(doc)[:8]}")
    ts = _parse_stamp(doc["timestamp"]) if isinstance(doc["timestamp"], str) else None
    if (bad := check_ts(ts, doc["timestamp"])) is not None:
        return bad
    value = doc["value"]
    try:  # Go's strconv.FormatFloat text: "NaN", "+Inf", "1.5e+06"
        number = float(value) if isinstance(value, str) else None
    except ValueError:
        number = None
    if number is None:
        return Rejection("invalid_value", f"value {str(value)[:80]!r} is not a float as a string")
    assert ts is not None
    return [Point(name, labels, ts, number)]


def decode_telegraf(raw: bytes | str, seconds_per_unit: float = 1.0) -> Decoded:
    """One Telegraf json-serializer message (a metric, or a batch of them)."""
    doc = _load(raw)
    if isinstance(doc, Rejection):
        return doc
    if not isinstance(doc, dict):
        return Rejection("not_an_object", f"top level is {type(doc).__name__}")
    metrics = doc.get("metrics", [doc])
    if not isinstance(metrics, list):
        return Rejection("unknown_shape", "'metrics' is not a list")
    points: list[Point] = []
    for metric in metrics:
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str) \
                or not isinstance(metric.get("fields"), dict) or "timestamp" not in metric:
            return Rejection("unknown_shape", "expected {name, tags, fields, timestamp}, got "
                                              f"{str(metric)[:120]}")
        tags = _string_labels(metric.get("tags", {}))
        if tags is None:
            return Rejection("unknown_shape", f"tags {str(metric.get('tags'))[:80]} is not an object")
        stamp = metric["timestamp"]
        if isinstance(stamp, str):
            ts = parse_ts(stamp)
        elif isinstance(stamp, int | float) and not isinstance(stamp, bool):
            ts = float(stamp) * seconds_per_unit
        else:
            ts = None
        if (bad := check_ts(ts, stamp)) is not None:
            return bad
        assert ts is not None
        name = metric["name"]
        prefix = "" if name == "prometheus" else f"{name}_"
        for field, value in metric["fields"].items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue  # strings and booleans are not metrics
            points.append(Point(prefix + field, tags, ts, float(value)))
    return points
