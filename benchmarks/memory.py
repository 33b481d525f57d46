"""Memory per tracked service: window state and bookkeeping, beyond the fixed cost.

    python benchmarks/memory.py [--services 1000 10000 100000]

What the daemon keeps per service, built the way the daemon builds it (no broker, no model:
neither grows with the services): the pipeline's buckets, window and alert state, the
ServiceTracker entry and the `sentinel_failure_risk` series. Each service gets
window_steps + lateness + 1 samples, so its window is full and its open buckets are as many
as a live stream keeps. Reported per count: tracemalloc's growth (Python and NumPy
allocations) per service, and, in a run without tracemalloc, the process RSS growth per
service and the RSS at the end. The RSS of the whole
daemon at 100,000 services is measured by end_to_end.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tracemalloc
from pathlib import Path

from prometheus_client import CollectorRegistry

from sentinel.config.load import load_config
from sentinel.core.pipeline import Pipeline
from sentinel.core.samples import Sample
from sentinel.core.services import ServiceTracker
from sentinel.daemon.telemetry import Telemetry

STEP = 10
START_TS = 1763942400
POLL = 2000


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def track(services: int, config_path: str, traced: bool) -> dict[str, float]:
    config = load_config(config_path)
    pipeline = Pipeline(config, model=None)
    tracker = ServiceTracker(config.stream.silence_seconds, services)
    telemetry = Telemetry(CollectorRegistry())
    steps = config.window_steps + int(config.stream.allowed_lateness_seconds // STEP) + 1
    names = [f"svc-{i:06d}" for i in range(services)]
    gc.collect()
    rss_before = rss_bytes()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for step in range(steps):
        ts = float(START_TS + STEP * step)
        for first in range(0, services, POLL):  # polls of kafka.max_poll_records samples
            batch = [Sample(name, ts, {"qps": 100.0 + step, "p99_ms": 80.0, "error_rate": 0.001,
                                       "cpu": 0.5}) for name in names[first: first + POLL]]
            for sample in batch:
                tracker.seen(sample.service, 0, ts)
            result = pipeline.process(batch)
            for bucket in result.buckets:  # what a scored window leaves behind
                pipeline.alerts.observe(bucket.service, bucket.ts, 0.1)
                telemetry.set_risk(bucket.service, 0.1)
            del batch, result
    gc.collect()
    rss_grown = rss_bytes() - rss_before
    full = sum(1 for name in names if name in pipeline.windows)
    figures = {"services": services, "window_steps": config.window_steps, "windows_full": full}
    if traced:
        figures["traced_bytes_per_service"] = round(
            (tracemalloc.get_traced_memory()[0] - before) / services)
        tracemalloc.stop()
    else:  # tracemalloc's own bookkeeping would count in the RSS
        figures["rss_bytes_per_service"] = round(rss_grown / services)
        figures["rss_mb"] = round(rss_bytes() / 2**20, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="config/sentinel.yaml")
    parser.add_argument("--services", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--modes", nargs="+", default=["traced", "rss"], choices=["traced", "rss"])
    args = parser.parse_args()
    for services in args.services:  # one process per run: RSS does not shrink back
        for traced in (mode == "traced" for mode in args.modes):
            pid = os.fork()
            if pid == 0:
                print(json.dumps({**track(services, args.config, traced),
                                  "load_avg_1m": os.getloadavg()[0]}), flush=True)
                os._exit(0)
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
