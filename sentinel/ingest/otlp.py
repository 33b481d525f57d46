"""OpenTelemetry metrics as the Collector's Kafka exporter writes them: one
``ExportMetricsServiceRequest`` per message, protobuf (``otlp_proto``) or JSON (``otlp_json``).

    >>> points = decode_otlp_proto(request.SerializeToString())

Parsed with the `opentelemetry-proto` package's generated classes (no hand-written schema).
Labels of a point are its resource's attributes overlaid with the data point's own. Gauges and
cumulative sums are one point per data point (a monotonic sum is a counter: map it with
``counter: true``); a cumulative histogram becomes Prometheus-style series
``<name>_bucket{le=...}`` (cumulative counts), ``<name>_count`` and ``<name>_sum``, so a
``histogram_quantile`` source reads it exactly like one from Prometheus. A data point flagged
"no recorded value" is a NaN (a gap). Delta temporality, exponential histograms and summaries
are not decoded (counted in the message's rejection when nothing else is in it): run the
Collector's ``deltatocumulative`` processor in front.
"""

from __future__ import annotations

import json
import math

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, DataPointFlags

from sentinel.ingest.points import MAX_FOREIGN_MESSAGE_BYTES, Decoded, Point, Rejection, check_ts

_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_NO_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


def decode_otlp_proto(raw: bytes) -> Decoded:
    if len(raw) > MAX_FOREIGN_MESSAGE_BYTES:
        return Rejection("too_large", f"{len(raw)} bytes > {MAX_FOREIGN_MESSAGE_BYTES}")
    request = ExportMetricsServiceRequest()
    try:
        request.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        return Rejection("malformed_protobuf", str(exc)[:200])
    return points_of(request)


def decode_otlp_json(raw: bytes | str) -> Decoded:
    if len(raw) > MAX_FOREIGN_MESSAGE_BYTES:
        return Rejection("too_large", f"{len(raw)} bytes > {MAX_FOREIGN_MESSAGE_BYTES}")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return Rejection("malformed_json", str(exc)[:200])
    if not isinstance(doc, dict):
        return Rejection("not_an_object", f"top level is {type(doc).__name__}")
    _drop_exemplars(doc)  # OTLP/JSON writes trace ids as hex, protobuf's JSON reads base64
    request = ExportMetricsServiceRequest()
    try:
        json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        return Rejection("unknown_shape", f"not an ExportMetricsServiceRequest: {str(exc)[:200]}")
    return points_of(request)


def _drop_exemplars(node: object) -> None:
    if isinstance(node, dict):
        node.pop("exemplars", None)
        for value in node.values():
            _drop_exemplars(value)
    elif isinstance(node, list):
        for value in node:
            _drop_exemplars(value)


def _text(value: object) -> str:
    kind = value.WhichOneof("value")  # type: ignore[attr-defined]
    return "" if kind is None else str(getattr(value, kind))


def points_of(request: ExportMetricsServiceRequest) -> Decoded:
    points: list[Point] = []
    skipped: list[str] = []
    for resource_metrics in request.resource_metrics:
        resource = {kv.key: _text(kv.value) for kv in resource_metrics.resource.attributes}
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind) if kind else None
                if kind == "gauge" or (kind == "sum" and data.aggregation_temporality == _CUMULATIVE):
                    for dp in data.data_points:
                        ts = dp.time_unix_nano / 1e9
                        if (bad := check_ts(ts, dp.time_unix_nano)) is not None:
                            return bad
                        value = dp.as_double if dp.WhichOneof("value") == "as_double" else float(dp.as_int)
                        if dp.flags & _NO_VALUE:
                            value = math.nan
                        points.append(Point(metric.name, _labels(resource, dp.attributes), ts, value))
                elif kind == "histogram" and data.aggregation_temporality == _CUMULATIVE:
                    for dp in data.data_points:
                        ts = dp.time_unix_nano / 1e9
                        if (bad := check_ts(ts, dp.time_unix_nano)) is not None:
                            return bad
                        points += _histogram(metric.name, _labels(resource, dp.attributes), ts, dp)
                else:
                    skipped.append(f"{metric.name} ({kind or 'no data'}"
                                   f"{', delta' if kind in ('sum', 'histogram') else ''})")
    if not points and skipped:
        return Rejection("unknown_shape", f"nothing decodable: {', '.join(skipped[:5])}")
    return points


def _labels(resource: dict[str, str], attributes: object) -> dict[str, str]:
    labels = dict(resource)
    for kv in attributes:  # type: ignore[attr-defined]
        labels[kv.key] = _text(kv.value)
    return labels


def _histogram(name: str, labels: dict[str, str], ts: float, dp: object) -> list[Point]:
    missing = bool(dp.flags & _NO_VALUE)  # type: ignore[attr-defined]
    bounds = [*(repr(float(b)) for b in dp.explicit_bounds), "+Inf"]  # type: ignore[attr-defined]
    counts = list(dp.bucket_counts)  # type: ignore[attr-defined]
    if len(counts) != len(bounds):  # no buckets at all: the count alone is still a count
        counts = [0] * (len(bounds) - 1) + [dp.count]  # type: ignore[attr-defined]
    points = []
    cumulative = 0.0
    for bound, count in zip(bounds, counts, strict=True):
        cumulative += count
        points.append(Point(f"{name}_bucket", {**labels, "le": bound}, ts,
                            math.nan if missing else cumulative))
    points.append(Point(f"{name}_count", labels, ts, math.nan if missing else float(dp.count)))  # type: ignore[attr-defined]
    points.append(Point(f"{name}_sum", labels, ts, math.nan if missing else float(dp.sum)))  # type: ignore[attr-defined]
    return points
