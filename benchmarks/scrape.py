"""What one /metrics scrape costs the daemon at 1,000 to 100,000 tracked services.

    python benchmarks/scrape.py [--services 1000 10000 100000] [--repeat 5]

The daemon's registry (its Telemetry, the process collectors) with one
`sentinel_failure_risk` series per service, rendered by prometheus_client's
`generate_latest` and by `sentinel.daemon.telemetry.exposition` (what /metrics serves: the risk
family written directly). The scrape runs on an HTTP thread, but it holds the GIL, so its
time is taken from the scoring loop. Prints the best of `--repeat` runs, a JSON line per count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from sentinel.daemon.telemetry import Telemetry, exposition


def best_seconds(render: Callable[[CollectorRegistry], bytes], registry: CollectorRegistry,
                 repeat: int) -> tuple[float, bytes]:
    times, text = [], b""
    for _ in range(repeat):
        started = time.perf_counter()
        text = render(registry)
        times.append(time.perf_counter() - started)
    return min(times), text


def risk_lines(text: bytes) -> list[bytes]:
    return sorted(line for line in text.splitlines() if b"sentinel_failure_risk" in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    for services in args.services:
        registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        telemetry = Telemetry(registry)
        for i in range(services):
            telemetry.set_risk(f"checkout-{i:06d}.eu-west-1", rng.random())
        reference, reference_text = best_seconds(generate_latest, registry, args.repeat)
        fast, text = best_seconds(exposition, registry, args.repeat)
        print(json.dumps({
            "services": services, "bytes": len(text),
            "same_risk_lines": risk_lines(text) == risk_lines(reference_text),
            "generate_latest_ms": round(reference * 1000, 1),
            "exposition_ms": round(fast * 1000, 1), "speed-up": round(reference / fast, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
