"""Soak: `sentinel run` (the real App) on a real broker for minutes; memory, retracing, lag.

    python benchmarks/soak.py [--minutes 3] [--services 300] [--speed 30] [--model DIR]

A tansu broker on loopback, the daemon's App on a thread of this process, and a producer
thread sending one sample per service per 10 s step of event time, `--speed` seconds of event
time per wall second: `--speed 30` is 3 steps a second, i.e. `--services` x 3 samples a
second. Every `--every` seconds it prints one JSON line: RSS, tracked services, lag, samples,
windows scored, tf traces. At the end a summary: RSS after the warm-up (the first full window
of every service) and at the end, bytes per tracked service (RSS after the warm-up minus RSS
before the first sample, over the services), RSS growth after the warm-up, traces, max lag.

Retracing: with `--runtime tensorflow` the scorer's tf.function is asked how often it traced;
the default serving runtime (ONNX Runtime) builds its graph once when the model loads, so
there is nothing to retrace and the traces are null.

Run longer with `--minutes 60` (or more); `--services 2000` for a bigger replica. Without
`--model` a small model is trained first (tests.testkit.daemon.train_small_model, ~30 s).
Figures from this script are in RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test kit: tests.testkit

from sentinel.daemon.kafka_client import make_producer  # noqa: E402
from sentinel.model.artifact import load_model  # noqa: E402
from sentinel.runner import App  # noqa: E402
from sentinel.sim.localbroker import TansuBroker  # noqa: E402
from sentinel.training.keras_model import Scorer  # noqa: E402
from tests.testkit.daemon import train_small_model, write_config  # noqa: E402

STEP_SECONDS = 10


def produce(bootstrap: str, topic: str, services: int, steps_per_second: float, start_ts: int,
            stop: threading.Event, sent: list[int]) -> None:
    """One sample per service per step, `steps_per_second` steps a wall second."""
    rng = np.random.default_rng(0)
    base = rng.uniform(50, 5000, services)
    producer = make_producer(bootstrap)
    started, step = time.monotonic(), 0
    try:
        while not stop.is_set():
            ts = start_ts + STEP_SECONDS * step
            for i in range(services):
                sample = {"service": f"svc-{i:05d}", "ts": ts, "metrics": {
                    "qps": round(float(base[i] * rng.uniform(0.9, 1.1)), 2),
                    "p99_ms": round(float(rng.uniform(40, 300)), 1),
                    "error_rate": round(float(rng.uniform(0, 0.01)), 4),
                    "cpu": round(float(rng.uniform(0.2, 0.8)), 3)}}
                producer.send(topic, key=sample["service"].encode(),
                              value=json.dumps(sample, separators=(",", ":")).encode())
            sent[0] += services
            step += 1
            stop.wait(max(0.0, started + step / steps_per_second - time.monotonic()))
    finally:
        producer.flush()
        producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--speed", type=float, default=30.0,
                        help="event-time seconds per wall second")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--model", type=Path, help="a model directory (default: train one)")
    parser.add_argument("--runtime", choices=["onnxruntime", "numpy", "tensorflow"],
                        help="serving runtime (default: the daemon's, the fastest installed)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sentinel-soak-") as tmp_name, \
            TansuBroker() as broker:
        tmp = Path(tmp_name)
        model_dir, threshold = (args.model, 0.5) if args.model else (
            tmp / "model" / "model", train_small_model(tmp / "model" / "model"))
        broker.create_topic("metrics", partitions=args.partitions)
        _, config = write_config(tmp / "soak.yaml", bootstrap=broker.bootstrap, topic="metrics",
                                 model_dir=model_dir, state_dir=tmp / "state",
                                 threshold=threshold)
        registry = CollectorRegistry()
        app = App.create(config, registry)
        if args.runtime:
            app.daemon.pipeline.model = load_model(model_dir, config, args.runtime).scorer
        scorer = app.daemon.pipeline.model
        thread = threading.Thread(target=app.run, daemon=True)
        thread.start()

        def metric(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        def lag() -> float:
            return sum(metric("sentinel_consumer_lag", partition=str(p))
                       for p in range(args.partitions))

        def traces() -> int | None:
            if not isinstance(scorer, Scorer):
                return None  # ONNX Runtime / NumPy: a fixed graph, nothing to retrace
            return int(scorer._call.experimental_get_tracing_count())

        while not app.daemon.health.readiness()[0]:
            time.sleep(0.2)
        time.sleep(1.0)
        rss_before = metric("process_resident_memory_bytes")
        steps_per_second = args.speed / STEP_SECONDS
        start_ts = int(time.time() - args.minutes * 60 * args.speed - 3600) // 10 * 10
        stop, sent = threading.Event(), [0]
        producer = threading.Thread(target=produce, args=(
            broker.bootstrap, "metrics", args.services, steps_per_second, start_ts, stop, sent),
            daemon=True)
        started = time.monotonic()
        producer.start()
        warm_after = config.window_steps / steps_per_second * 1.2  # every window full, and then some
        rows, rss_warm, traces_warm = [], None, None
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            time.sleep(args.every)
            row = {"t_s": round(time.monotonic() - started), "rss_mib": round(
                metric("process_resident_memory_bytes") / 2**20, 1),
                "tracked": int(metric("sentinel_services_tracked")), "lag": int(lag()),
                "sent": sent[0], "samples": int(metric("sentinel_samples_total")),
                "scored": int(metric("sentinel_scoring_batch_size_sum")), "tf_traces": traces()}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if rss_warm is None and elapsed >= warm_after:
                rss_warm, traces_warm = metric("process_resident_memory_bytes"), traces()
        stop.set()
        producer.join(10)
        app.stop()
        thread.join(15)
    after_warm = [r for r in rows if r["t_s"] >= warm_after]
    tracked = max(r["tracked"] for r in rows)
    summary = {
        "minutes": args.minutes, "services": args.services, "speed": args.speed,
        "samples_per_s": round(args.services * steps_per_second),
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_after_warmup_mib": round((rss_warm or 0) / 2**20, 1),
        "rss_end_mib": rows[-1]["rss_mib"],
        "rss_growth_after_warmup_mib": round(rows[-1]["rss_mib"] - (rss_warm or 0) / 2**20, 1),
        "bytes_per_tracked_service": round(((rss_warm or 0) - rss_before) / max(1, tracked)),
        "runtime": scorer.runtime,
        "tf_traces_after_warmup": (traces() - traces_warm) if traces_warm is not None else None,
        "tf_traces_total": traces(),
        "max_lag_after_warmup": max((r["lag"] for r in after_warm), default=None),
        "samples": rows[-1]["samples"], "windows_scored": rows[-1]["scored"],
    }
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
