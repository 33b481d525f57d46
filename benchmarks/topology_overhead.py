"""What a topology costs the pipeline per step: the same stream scored with and without one.

    python benchmarks/topology_overhead.py --services 10000 --deps 10 [--steps 5] [--window 5m]

In-process, no broker: `--services` services, each depending on `--deps` others drawn at
random, one sample per service and 10 s step. The windows are filled first; then every
measured step closes one bucket per service, as a live stream does, and is fed to
`Pipeline.process` in one poll. The same untrained model (weights do not change the cost) is
scored once as a plain model and once recording the topology channels (wider input; the
dependency gate, the kept dependency windows and the channel aggregation). Prints one JSON
line: seconds per step and windows/s for both, and the tracemalloc peak of the topology run's
kept dependency steps.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sentinel.config.load import parse_config
from sentinel.core.context import ContextLayout
from sentinel.core.features import Scaler
from sentinel.core.pipeline import Pipeline
from sentinel.core.samples import Sample
from sentinel.core.topology import Topology, input_names, topology_channels
from sentinel.model.fastlstm import FastScorer, LstmWeights, available_runtimes, expected_shapes

T0 = 1_763_942_400


def config_of(window: str) -> object:
    return parse_config({
        "step": "10s", "window": window, "horizon": "5m",
        "features": [{"name": n} for n in ("qps", "p99_ms", "error_rate", "cpu")],
        "failure": {"any": [{"metric": "error_rate", "op": ">=", "value": 0.05},
                            {"metric": "p99_ms", "op": ">=", "value": 2000}], "for": "30s"},
        "alerting": {"threshold": 0.999},
        "stream": {"allowed_lateness": "0s"},
    })


def scorer(config, with_topology: bool, runtime: str) -> FastScorer:
    scaler = Scaler((0.0,) * 8, (1.0,) * 8, ("slog", "slog", "slog", "none"), (1.0,) * 4,
                    deviation=True)
    layout = (ContextLayout.of({"topology": topology_channels(input_names(
        config.feature_names, True))}) if with_topology else ContextLayout())
    rng = np.random.default_rng(0)
    weights = LstmWeights(*(rng.normal(0, 0.1, s).astype(np.float32)
                            for s in expected_shapes(8 + layout.width, (48, 24))))
    return FastScorer(weights, scaler, config, runtime, context=layout)


def step_samples(services: int, step: int, rng: np.random.Generator) -> list[Sample]:
    ts = T0 + 10 * step
    qps = rng.uniform(50, 5000, services)
    return [Sample(f"svc{i}", ts, {"qps": float(qps[i]), "p99_ms": 100.0 + i % 50,
                                   "error_rate": 0.001, "cpu": 0.4}) for i in range(services)]


def run(config, model: FastScorer, topology: Topology | None, services: int, steps: int
        ) -> dict[str, float]:
    rng = np.random.default_rng(1)
    pipeline = Pipeline(config, model, config.alerting.resolved(None), topology=topology)
    fill = config.window_steps + 1
    for step in range(fill):  # step k closes step k-1 (no lateness)
        pipeline.process(step_samples(services, step, rng))
    seconds, scored, late = [], 0, 0
    for step in range(fill, fill + steps):
        samples = step_samples(services, step, rng)
        started = time.perf_counter()
        result = pipeline.process(samples)
        seconds.append(time.perf_counter() - started)
        scored += len(result.scores)
        late += result.dependency_late
    per_step = float(np.median(seconds))
    return {"seconds_per_step": round(per_step, 3),
            "windows_per_second": round(services / per_step), "scored": scored, "late": late}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--deps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--window", default="5m")
    parser.add_argument("--runtime", default=available_runtimes()[0])
    args = parser.parse_args()
    config = config_of(args.window)
    rng = np.random.default_rng(2)
    names = [f"svc{i}" for i in range(args.services)]
    topology = Topology.of({name: [names[j] for j in rng.choice(args.services, args.deps,
                                                                 replace=False)]
                            for name in names})
    plain = run(config, scorer(config, False, args.runtime), None, args.services, args.steps)
    with_topology = run(config, scorer(config, True, args.runtime), topology, args.services,
                        args.steps)
    print(json.dumps({"services": args.services, "deps": args.deps,
                      "window_steps": config.window_steps, "runtime": args.runtime,
                      "plain": plain, "topology": with_topology,
                      "cost_ratio": round(with_topology["seconds_per_step"]
                                          / plain["seconds_per_step"], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
