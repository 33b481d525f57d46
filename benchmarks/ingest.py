"""`sentinel ingest` decode throughput per core: foreign messages -> points -> samples.

    python benchmarks/ingest.py [--services 2000] [--steps 6]

One thread (one core) decodes and assembles pre-built messages of a typical RED/USE set per
service and step, in each format, exactly as the bridge does per record (decoder_for ->
Assembler.add -> close_ready), without Kafka: the broker's own cost is in BENCHMARKS.md §2.
Per service and step, 32 Prometheus-style series: http_requests_total{code, instance} (4,
a counter), http_request_duration_seconds_bucket{le, instance} (2 x 12 buckets),
process_cpu_seconds_total{instance} (2), up{instance} (2, not mapped). OTLP carries the same
as one request per service and step (a sum, a histogram, a sum and a gauge, with the
histogram's _count and _sum points: 36 points). Prints points/s and messages/s per format,
and the cores a 100,000-service feed at a 10 s step would take; a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from sentinel.config.load import parse_config
from sentinel.ingest.assemble import Assembler, mappings
from sentinel.ingest.formats import decoder_for

T0 = 1763899200
STEP = 10
POLL_RECORDS = 2000  # kafka.max_poll_records' default
BOUNDS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")
FEATURES = [
    {"name": "qps", "source": {"metric": "http_requests_total", "counter": True}},
    {"name": "errors", "source": {"metric": "http_requests_total", "counter": True,
                                  "match": {"code": "5.."}}},
    {"name": "p99_ms", "source": {"metric": "http_request_duration_seconds",
                                  "histogram_quantile": 0.99, "scale": 1000}},
    {"name": "cpu", "source": {"metric": "process_cpu_seconds_total", "counter": True,
                               "aggregate": "mean"}},
]
OTLP_NAMES = {"http_requests_total": "http.server.requests",
              "http_request_duration_seconds": "http.server.duration",
              "process_cpu_seconds_total": "process.cpu.time"}


def series(service: int, step: int) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of one service's 32 series at the end of one step."""
    job = f"svc-{service}"
    out = []
    for inst in ("a", "b"):
        for code, rate in (("200", 100.0), ("500", 1.0)):
            out.append(("http_requests_total", {"job": job, "instance": inst, "code": code},
                        rate * STEP * step))
        for i, le in enumerate(BOUNDS):
            out.append(("http_request_duration_seconds_bucket", {"job": job, "instance": inst, "le": le},
                        float(step * 100 * (i + 1) // len(BOUNDS))))
        out.append(("process_cpu_seconds_total", {"job": job, "instance": inst}, 0.4 * STEP * step))
        out.append(("up", {"job": job, "instance": inst}, 1.0))
    return out


def adapter_messages(services: int, steps: int) -> list[bytes]:
    out = []
    for step in range(steps):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + STEP * step))
        for s in range(services):
            for name, labels, value in series(s, step):
                out.append(json.dumps({"timestamp": stamp, "value": repr(value), "name": name,
                                       "labels": {"__name__": name, **labels}}).encode())
    return out


def telegraf_messages(services: int, steps: int) -> list[bytes]:
    return [json.dumps({"metrics": [{"name": "prometheus", "tags": labels, "fields": {name: value},
                                     "timestamp": T0 + STEP * step}
                                    for name, labels, value in series(s, step)]}).encode()
            for step in range(steps) for s in range(services)]


def otlp_requests(services: int, steps: int) -> list[ExportMetricsServiceRequest]:
    out = []
    for step in range(steps):
        nanos = str((T0 + STEP * step) * 10**9)
        for s in range(services):
            def attrs(**labels: str) -> list[dict]:
                return [{"key": k, "value": {"stringValue": v}} for k, v in labels.items()]
            requests = [{"asDouble": rate * STEP * step, "timeUnixNano": nanos,
                         "attributes": attrs(instance=inst, code=code)}
                        for inst in ("a", "b") for code, rate in (("200", 100.0), ("500", 1.0))]
            histogram = [{"timeUnixNano": nanos, "count": str(100 * step), "sum": 1.0 * step,
                          "explicitBounds": [float(b) for b in BOUNDS[:-1]],
                          "bucketCounts": [str(100 * step // len(BOUNDS))] * len(BOUNDS),
                          "attributes": attrs(instance=inst)} for inst in ("a", "b")]
            cpu = [{"asDouble": 0.4 * STEP * step, "timeUnixNano": nanos, "attributes": attrs(instance=inst)}
                   for inst in ("a", "b")]
            up = [{"asInt": "1", "timeUnixNano": nanos, "attributes": attrs(instance=inst)}
                  for inst in ("a", "b")]
            request = ExportMetricsServiceRequest()
            json_format.ParseDict({"resourceMetrics": [{
                "resource": {"attributes": attrs(**{"service.name": f"svc-{s}"})},
                "scopeMetrics": [{"metrics": [
                    {"name": "http.server.requests", "sum": {"aggregationTemporality": 2, "isMonotonic": True,
                                                             "dataPoints": requests}},
                    {"name": "http.server.duration", "histogram": {"aggregationTemporality": 2,
                                                                   "dataPoints": histogram}},
                    {"name": "process.cpu.time", "sum": {"aggregationTemporality": 2, "isMonotonic": True,
                                                         "dataPoints": cpu}},
                    {"name": "up", "gauge": {"dataPoints": up}}]}]}]}, request)
            out.append(request)
    return out


def config_for(fmt: str):
    features = json.loads(json.dumps(FEATURES))
    if fmt.startswith("otlp"):
        for feature in features:
            feature["source"]["metric"] = OTLP_NAMES[feature["source"]["metric"]]
    return parse_config({
        "step": "10s", "window": "5m", "horizon": "5m", "features": features,
        "failure": {"any": [{"metric": "errors", "op": ">", "value": 5}]},
        "input": {"format": fmt, "topic": "foreign",
                  "service_label": "service.name" if fmt.startswith("otlp") else "job"}})


def measure(fmt: str, messages: list[bytes]) -> dict[str, float]:
    config = config_for(fmt)
    decode = decoder_for(config.input)
    assembler = Assembler(mappings(config), config.input.service_label, config.step_seconds)
    points = samples = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for offset, raw in enumerate(messages):
        decoded = decode(raw)
        assert isinstance(decoded, list), decoded
        points += len(decoded)
        assembler.add(decoded, origin=(0, offset))
        if offset % POLL_RECORDS == POLL_RECORDS - 1:  # the bridge closes steps once per poll
            samples += len(assembler.close_ready())
    samples += len(assembler.flush())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"messages": len(messages), "points": points, "samples": samples,
            "cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3),
            "points_per_cpu_second": round(points / cpu),
            "messages_per_cpu_second": round(len(messages) / cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    otlp = otlp_requests(args.services, args.steps)
    inputs = {"prometheus-kafka-adapter": adapter_messages(args.services, args.steps),
              "telegraf-json": telegraf_messages(args.services, args.steps),
              "otlp-proto": [r.SerializeToString() for r in otlp],
              "otlp-json": [json_format.MessageToJson(r, indent=None).encode() for r in otlp]}
    figures: dict[str, object] = {"services": args.services, "steps": args.steps}
    for fmt, messages in inputs.items():
        result = measure(fmt, messages)
        points_per_service_step = result["points"] / (args.services * args.steps)
        # a 100,000-service feed at a 10 s step: points/s it brings, cores it takes to decode
        needed = 100_000 * points_per_service_step / STEP
        result["cores_for_100k_services"] = round(needed / result["points_per_cpu_second"], 2)
        figures[fmt] = result
        print(f"{fmt:26s} {result['points_per_cpu_second']:>10,} points/s per core  "
              f"{result['messages_per_cpu_second']:>9,} messages/s  "
              f"{points_per_service_step:.0f} points per service-step  "
              f"100k services: {result['cores_for_100k_services']} cores")
    figures["load_average_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
