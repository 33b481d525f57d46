"""`sentinel ingest` on a real broker (tansu): foreign messages in, Sentinel samples out, per format.

One traffic model (per service and step: a counter on two instances with a reset, a gauge on
two instances, a latency histogram) is written in each tool's message shape; the bridge must
produce exactly the Sentinel samples that describe that traffic, keyed by service; a
malformed message goes to the dead-letter topic with its reason.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client import CollectorRegistry

from sentinel.config.load import parse_config
from sentinel.ingest.bridge import Bridge
from tests.testkit.broker import FAST_GROUP
from tests.testkit.daemon import BASE_CONFIG, committed_offsets, consume_all, produce

T0 = 1763899200
SERVICES = ("checkout", "cart", "search")
STEPS = 6
BOUNDS = ("0.1", "0.5", "+Inf")


def traffic(service_index: int, step: int) -> dict:
    """The state of one service at the end of one step: cumulative counters, gauges, buckets."""
    s, i = service_index, step
    counter_a = 100 * s + sum(10 * (10 + k + s) for k in range(i + 1))  # rate 10 + i + s per s
    counter_b = 5000 + 50 * i if i < 3 else 50 * (i - 2)  # 5/s, restarted at step 3
    buckets = [sum(40 + k for k in range(i + 1)), 90 * (i + 1), 100 * (i + 1)]  # cumulative
    return {"requests": {"a": counter_a, "b": counter_b},
            "cpu": {"a": 0.2 + 0.1 * s, "b": 0.4 + 0.01 * i}, "latency": buckets}


def expected_samples() -> list[dict]:
    out = []
    for s, service in enumerate(SERVICES):
        for i in range(STEPS):
            metrics = {"cpu": ((0.2 + 0.1 * s) + (0.4 + 0.01 * i)) / 2}
            if i > 0:
                metrics["qps"] = (10 + i + s) + 5.0
                c1 = 40 + i  # this step's observations: c1 under 0.1 s, 90 under 0.5 s, of 100
                metrics["p50_ms"] = 1000 * (0.1 + 0.4 * (50 - c1) / (90 - c1))
            out.append({"service": service, "ts": T0 + 10 * i, "metrics": metrics})
    return out


# --- the four shapes --------------------------------------------------------------------

def prometheus_adapter_messages() -> list[bytes]:
    out = []
    for i in range(STEPS):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 10 * i + 5))
        for s, service in enumerate(SERVICES):
            state = traffic(s, i)

            def message(name: str, value: float, stamp: str = stamp, **labels: str) -> bytes:
                return json.dumps({"timestamp": stamp, "value": repr(float(value)), "name": name,
                                   "labels": {"__name__": name, **labels}}).encode()
            for inst in ("a", "b"):
                out.append(message("http_requests_total", state["requests"][inst], job=service,
                                   instance=inst, code="200"))
                out.append(message("cpu_utilization", state["cpu"][inst], job=service, instance=inst))
            for le, count in zip(BOUNDS, state["latency"], strict=True):
                out.append(message("http_request_duration_seconds_bucket", count, job=service, le=le))
    return out


def telegraf_messages() -> list[bytes]:
    out = []
    for i in range(STEPS):
        for s, service in enumerate(SERVICES):
            state = traffic(s, i)
            metrics = []
            for inst in ("a", "b"):
                tags = {"job": service, "instance": inst}
                metrics.append({"name": "prometheus", "tags": tags, "timestamp": T0 + 10 * i + 5,
                                "fields": {"http_requests_total": state["requests"][inst]}})
                metrics.append({"name": "cpu", "tags": tags, "timestamp": T0 + 10 * i + 5,
                                "fields": {"utilization": state["cpu"][inst], "state": "ok"}})
            for le, count in zip(BOUNDS, state["latency"], strict=True):
                metrics.append({"name": "prometheus", "tags": {"job": service, "le": le},
                                "timestamp": T0 + 10 * i + 5,
                                "fields": {"http_request_duration_seconds_bucket": count}})
            out.append(json.dumps({"metrics": metrics}).encode())
    return out


def otlp_requests() -> list[ExportMetricsServiceRequest]:
    out = []
    for i in range(STEPS):
        nanos = str((T0 + 10 * i + 5) * 10**9)
        for s, service in enumerate(SERVICES):
            state = traffic(s, i)
            cumulative = state["latency"]
            per_bucket = [cumulative[0], cumulative[1] - cumulative[0], cumulative[2] - cumulative[1]]

            def attrs(inst: str) -> list[dict]:
                return [{"key": "instance", "value": {"stringValue": inst}}]
            metrics = [
                {"name": "http.server.requests", "sum": {"aggregationTemporality": 2, "isMonotonic": True,
                 "dataPoints": [{"asInt": str(state["requests"][inst]), "timeUnixNano": nanos,
                                 "attributes": attrs(inst)} for inst in ("a", "b")]}},
                {"name": "system.cpu.utilization", "gauge": {"dataPoints": [
                    {"asDouble": state["cpu"][inst], "timeUnixNano": nanos, "attributes": attrs(inst)}
                    for inst in ("a", "b")]}},
                {"name": "http.server.duration", "histogram": {"aggregationTemporality": 2, "dataPoints": [
                    {"timeUnixNano": nanos, "count": str(cumulative[2]), "sum": 1.0,
                     "bucketCounts": [str(c) for c in per_bucket], "explicitBounds": [0.1, 0.5]}]}},
            ]
            request = ExportMetricsServiceRequest()
            json_format.ParseDict({"resourceMetrics": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeMetrics": [{"metrics": metrics}]}]}, request)
            out.append(request)
    return out


PROM_SOURCES = {"qps": {"metric": "http_requests_total", "counter": True, "match": {"code": "2.."}},
                "cpu": {"metric": "cpu_utilization", "aggregate": "mean"},
                "p50_ms": {"metric": "http_request_duration_seconds", "histogram_quantile": 0.5,
                           "scale": 1000}}
FORMATS = {
    "prometheus-kafka-adapter": ("job", PROM_SOURCES, prometheus_adapter_messages),
    "telegraf-json": ("job", {**PROM_SOURCES, "qps": {"metric": "http_requests_total", "counter": True},
                              "cpu": {"metric": "cpu_utilization", "aggregate": "mean"}},
                      telegraf_messages),
    "otlp-json": ("service.name", {
        "qps": {"metric": "http.server.requests", "counter": True},
        "cpu": {"metric": "system.cpu.utilization", "aggregate": "mean"},
        "p50_ms": {"metric": "http.server.duration", "histogram_quantile": 0.5, "scale": 1000}},
        lambda: [json_format.MessageToJson(r).encode() for r in otlp_requests()]),
}
FORMATS["otlp-proto"] = (FORMATS["otlp-json"][0], FORMATS["otlp-json"][1],
                         lambda: [r.SerializeToString() for r in otlp_requests()])


def ingest_config(broker, fmt: str) -> dict:
    service_label, sources, _ = FORMATS[fmt]
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["features"] = [{"name": name, "source": source} for name, source in sources.items()]
    raw["failure"] = {"any": [{"metric": "p50_ms", "op": ">=", "value": 2000}]}
    raw["kafka"] = {"bootstrap_servers": broker.bootstrap, "topic": "sentinel.metrics",
                    "dead_letter_topic": "ingest.dlq", "group_id": "sentinel",
                    "session_timeout": f"{FAST_GROUP['session_timeout_ms'] / 1000}s", "poll_timeout": "0.3s"}
    raw["input"] = {"format": fmt, "topic": "foreign", "service_label": service_label}
    return raw


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ingest_turns_each_foreign_format_into_the_equivalent_sentinel_samples(kafka_broker, fmt):
    for topic, partitions in (("foreign", 3), ("sentinel.metrics", 2), ("ingest.dlq", 1)):
        kafka_broker.create_topic(topic, partitions=partitions)
    messages = FORMATS[fmt][2]()
    produce(kafka_broker.bootstrap, "foreign", [(None, m) for m in messages] + [(None, b"\x00{oops")])
    bridge = Bridge.create(parse_config(ingest_config(kafka_broker, fmt)), CollectorRegistry())
    want = expected_samples()
    produced = 0
    deadline = time.monotonic() + 30
    try:
        while produced < len(want) and time.monotonic() < deadline:
            produced += bridge.run_once()
    finally:
        bridge.close()

    records = consume_all(kafka_broker.bootstrap, "sentinel.metrics", len(want))
    got = sorted((json.loads(r.value) for r in records), key=lambda s: (s["service"], s["ts"]))
    assert all(r.key == json.loads(r.value)["service"].encode() for r in records)
    assert len(got) == len(want)
    for sample, expected in zip(got, sorted(want, key=lambda s: (s["service"], s["ts"])), strict=True):
        assert (sample["service"], sample["ts"]) == (expected["service"], expected["ts"])
        assert sample["metrics"] == pytest.approx(expected["metrics"]), (fmt, sample)
    [letter] = consume_all(kafka_broker.bootstrap, "ingest.dlq", 1)
    assert dict(letter.headers)["sentinel-reason"] in (b"malformed_json", b"malformed_protobuf")
    # everything was produced and acknowledged, so every foreign record is committed
    assert sum(committed_offsets(kafka_broker.bootstrap, "foreign", "sentinel-ingest").values()) \
        == len(messages) + 1


def test_ingest_commits_no_further_than_the_points_of_steps_still_open(kafka_broker):
    kafka_broker.create_topic("foreign", partitions=1)
    kafka_broker.create_topic("sentinel.metrics", partitions=1)
    raw = ingest_config(kafka_broker, "prometheus-kafka-adapter")
    raw["kafka"]["dead_letter_topic"] = None
    del raw["kafka"]["dead_letter_topic"]
    messages = prometheus_adapter_messages()
    per_step = len(messages) // STEPS
    produce(kafka_broker.bootstrap, "foreign", [(None, m) for m in messages[: 2 * per_step]])
    bridge = Bridge.create(parse_config(raw), CollectorRegistry())
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and bridge.run_once() == 0:
            pass  # the first round with records closes step 0 (step 1 has begun)
    finally:
        bridge._source.close()  # leave without the flush of an idle round
    committed = committed_offsets(kafka_broker.bootstrap, "foreign", "sentinel-ingest")
    assert committed == {0: per_step}  # step 1's records are read again by the next owner


def test_cli_ingest_refuses_a_config_without_a_foreign_format_or_topic(tmp_path, capsys):
    from sentinel.cli import main

    raw = yaml.safe_load(BASE_CONFIG.read_text())
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["ingest", "--config", str(path)]) == 2
    assert "input.format" in capsys.readouterr().err
    raw["input"] = {"format": "telegraf-json"}
    path.write_text(yaml.safe_dump(raw))
    assert main(["ingest", "--config", str(path)]) == 2
    assert "input.topic" in capsys.readouterr().err


def test_sentinel_ingest_process_serves_metrics_and_stops_cleanly_on_sigterm(kafka_broker, tmp_path):
    import signal
    import subprocess
    import sys
    import urllib.request

    from tests.testkit.broker import free_port
    from tests.testkit.wait import wait_until

    kafka_broker.create_topic("foreign", partitions=2)
    kafka_broker.create_topic("sentinel.metrics", partitions=2)
    raw = ingest_config(kafka_broker, "prometheus-kafka-adapter")
    port = free_port()
    raw["input"]["metrics_listen"] = f"127.0.0.1:{port}"
    path = tmp_path / "ingest.yaml"
    path.write_text(yaml.safe_dump(raw))
    produce(kafka_broker.bootstrap, "foreign", [(None, m) for m in prometheus_adapter_messages()])
    log = (tmp_path / "ingest.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "sentinel", "ingest", "--config", str(path)],
                               stdout=log, stderr=subprocess.STDOUT)

    def produced() -> float:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
        except OSError:
            return 0.0
        lines = [line for line in text.splitlines() if line.startswith("sentinel_ingest_samples_total ")]
        return float(lines[0].split()[1]) if lines else 0.0
    try:
        wait_until(lambda: produced() >= len(expected_samples()), 40, "all samples produced")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert len(consume_all(kafka_broker.bootstrap, "sentinel.metrics", 18)) == 18
