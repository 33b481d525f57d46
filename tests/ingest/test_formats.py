"""Golden messages per foreign format, built from each tool's documented message shape:

- prometheus-kafka-adapter README (Telefonica/prometheus-kafka-adapter, "output: JSON"):
  ``{"timestamp": "1970-01-01T00:00:00Z", "value": "9876543210", "name": "up", "labels":
  {"__name__": "up", "label1": "value1", ...}}``;
- Telegraf's JSON output data format (docs.influxdata.com, telegraf/v1/data_formats/output/json):
  ``{"fields": {...}, "name": "docker", "tags": {"host": "raynor"}, "timestamp": 1458229140}``
  and the batch form ``{"metrics": [...]}``;
- OTLP ``ExportMetricsServiceRequest`` (opentelemetry-proto; OTLP/JSON: camelCase keys,
  ``timeUnixNano`` as a decimal string, histogram ``bucketCounts``/``explicitBounds``).
"""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from sentinel.config.schema import InputConfig
from sentinel.ingest.formats import decode_prometheus_adapter, decode_telegraf, decoder_for
from sentinel.ingest.otlp import decode_otlp_json, decode_otlp_proto
from sentinel.ingest.points import INGEST_REASONS, Point, Rejection

T0 = 1763899200  # 2025-11-23T12:00:00Z


def adapter(name: str, value: str, ts: str = "2025-11-23T12:00:00Z", **labels: str) -> bytes:
    return json.dumps({"timestamp": ts, "value": value, "name": name,
                       "labels": {"__name__": name, **labels}}).encode()


def otlp_request(metrics: list[dict], service: str = "checkout") -> dict:
    return {"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeMetrics": [{"scope": {"name": "io.opentelemetry.http"}, "metrics": metrics}]}]}


def test_prometheus_adapter_documented_message_is_one_point():
    raw = adapter("up", "9876543210", job="checkout", instance="a:9100")
    assert decode_prometheus_adapter(raw) == [
        Point("up", {"__name__": "up", "job": "checkout", "instance": "a:9100"}, float(T0), 9876543210.0)]


@pytest.mark.parametrize("text, expected", [("NaN", math.nan), ("+Inf", math.inf), ("-Inf", -math.inf),
                                            ("1.5e+06", 1.5e6), ("0", 0.0)])
def test_prometheus_adapter_values_are_go_float_text_and_nan_is_kept_as_a_gap(text, expected):
    [point] = decode_prometheus_adapter(adapter("x", text, job="j"))
    assert point.value == expected or (math.isnan(expected) and math.isnan(point.value))


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "malformed_json"),
    (b"[1, 2]", "not_an_object"),
    (b'{"timestamp": "2025-11-23T12:00:00Z", "value": "1"}', "unknown_shape"),
    (b'{"service": "checkout", "ts": 1763899200, "metrics": {"qps": 1}}', "unknown_shape"),
    (adapter("x", "1", ts="yesterday", job="j"), "invalid_ts"),
    (adapter("x", "1", ts="1970-01-01T00:00:00Z", job="j"), "ts_out_of_range"),
    (adapter("x", "one", job="j"), "invalid_value"),
    (json.dumps({"timestamp": "2025-11-23T12:00:00Z", "value": 1.0, "name": "x",
                 "labels": {}}).encode(), "invalid_value"),
    (b" " * (2 << 20), "too_large"),
])
def test_prometheus_adapter_malformed_messages_are_rejected_with_a_reason(raw, reason):
    result = decode_prometheus_adapter(raw)
    assert isinstance(result, Rejection) and result.reason == reason
    assert result.reason in INGEST_REASONS


def test_telegraf_documented_standard_form_is_a_point_per_numeric_field():
    raw = json.dumps({"fields": {"field_1": 30, "field_2": 4, "field_N": 59, "n_images": 660,
                                 "state": "running"},
                      "name": "docker", "tags": {"host": "raynor"}, "timestamp": 1458229140}).encode()
    assert decode_telegraf(raw) == [
        Point("docker_field_1", {"host": "raynor"}, 1458229140.0, 30.0),
        Point("docker_field_2", {"host": "raynor"}, 1458229140.0, 4.0),
        Point("docker_field_N", {"host": "raynor"}, 1458229140.0, 59.0),
        Point("docker_n_images", {"host": "raynor"}, 1458229140.0, 660.0),
    ]


def test_telegraf_batch_form_and_timestamp_units_and_the_prometheus_measurement():
    metric = {"fields": {"http_requests_total": 12}, "name": "prometheus",
              "tags": {"job": "checkout", "code": "200"}, "timestamp": T0 * 1000}
    decode = decoder_for(InputConfig(format="telegraf-json", timestamp_units="1ms"))
    points = decode(json.dumps({"metrics": [metric, {**metric, "timestamp": (T0 + 10) * 1000}]}).encode())
    assert [(p.metric, p.ts, p.value) for p in points] == [
        ("http_requests_total", float(T0), 12.0), ("http_requests_total", T0 + 10.0, 12.0)]


@pytest.mark.parametrize("doc, reason", [
    ({"fields": {"a": 1}, "tags": {}, "timestamp": T0}, "unknown_shape"),
    ({"name": "cpu", "fields": [1], "tags": {}, "timestamp": T0}, "unknown_shape"),
    ({"metrics": {"name": "cpu"}}, "unknown_shape"),
    ({"name": "cpu", "fields": {"a": 1}, "tags": {}, "timestamp": T0 * 1000}, "ts_out_of_range"),
    ({"name": "cpu", "fields": {"a": 1}, "tags": {}, "timestamp": True}, "invalid_ts"),
])
def test_telegraf_unknown_shapes_and_wrong_units_are_rejected(doc, reason):
    result = decode_telegraf(json.dumps(doc).encode())
    assert isinstance(result, Rejection) and result.reason == reason


OTLP_METRICS = [
    {"name": "http.server.active_requests", "unit": "{request}",
     "gauge": {"dataPoints": [{"asInt": "7", "timeUnixNano": f"{T0}000000000",
                               "attributes": [{"key": "http.route", "value": {"stringValue": "/pay"}}]}]}},
    {"name": "http.server.requests", "unit": "1",
     "sum": {"aggregationTemporality": 2, "isMonotonic": True,
             "dataPoints": [{"asDouble": 1520.0, "startTimeUnixNano": f"{T0 - 60}000000000",
                             "timeUnixNano": f"{T0}000000000",
                             "exemplars": [{"spanId": "eee19b7ec3c1b174", "traceId":
                                            "5b8efff798038103d269b633813fc60c", "asDouble": 1.0}]}]}},
    {"name": "http.server.duration", "unit": "s",
     "histogram": {"aggregationTemporality": 2, "dataPoints": [
         {"startTimeUnixNano": f"{T0 - 60}000000000", "timeUnixNano": f"{T0}000000000",
          "count": "10", "sum": 2.5, "bucketCounts": ["6", "3", "1"], "explicitBounds": [0.1, 0.5]}]}},
    {"name": "cpu.utilization", "gauge": {"dataPoints": [
        {"timeUnixNano": f"{T0}000000000", "flags": 1}]}},
]


def _by_metric(points: list[Point]) -> dict[tuple[str, str], float]:
    return {(p.metric, p.labels.get("le", "")): p.value for p in points}


def test_otlp_json_request_decodes_gauges_sums_histograms_and_no_value_flags():
    points = decode_otlp_json(json.dumps(otlp_request(OTLP_METRICS)).encode())
    assert not isinstance(points, Rejection)
    assert all(p.labels["service.name"] == "checkout" and p.ts == T0 for p in points)
    values = _by_metric(points)
    assert values[("http.server.active_requests", "")] == 7.0
    assert values[("http.server.requests", "")] == 1520.0
    assert [values[("http.server.duration_bucket", le)] for le in ("0.1", "0.5", "+Inf")] == [6, 9, 10]
    assert values[("http.server.duration_count", "")] == 10
    assert values[("http.server.duration_sum", "")] == 2.5
    assert math.isnan(values[("cpu.utilization", "")])
    assert points[0].labels["http.route"] == "/pay"


def test_otlp_proto_and_json_decode_to_the_same_points():
    request = ExportMetricsServiceRequest()
    json_format.ParseDict(otlp_request([m for m in OTLP_METRICS if m["name"] != "http.server.requests"]),
                          request)
    from_proto = decode_otlp_proto(request.SerializeToString())
    from_json = decode_otlp_json(json_format.MessageToJson(request).encode())
    assert from_proto == from_json and len(from_proto) == 7


@pytest.mark.parametrize("raw, decode, reason", [
    (b"\xff\xff\xff", decode_otlp_proto, "malformed_protobuf"),
    (b"{", decode_otlp_json, "malformed_json"),
    (b'{"resourceMetrics": "nope"}', decode_otlp_json, "unknown_shape"),
    (json.dumps(otlp_request([{"name": "d", "sum": {"aggregationTemporality": 1, "dataPoints": [
        {"asInt": "1", "timeUnixNano": f"{T0}000000000"}]}}])).encode(), decode_otlp_json, "unknown_shape"),
    (json.dumps(otlp_request([{"name": "g", "gauge": {"dataPoints": [{"asInt": "1"}]}}])).encode(),
     decode_otlp_json, "ts_out_of_range"),
])
def test_otlp_malformed_or_unsupported_messages_are_rejected(raw, decode, reason):
    result = decode(raw)
    assert isinstance(result, Rejection) and result.reason == reason, result
