"""Scoring-loop latency with and without a retraining child running beside it.

    python benchmarks/retrain_latency.py [--services 200] [--polls 300] [--epochs 3]
                                         [--runtime onnxruntime|numpy|tensorflow]

The loop is the daemon's `Pipeline.process`: every poll brings one sample per service and
closes one bucket each, so every poll is one batched model call over `--services` windows
(an untrained model of the shipped config's shape: the cost does not depend on the
weights; scored by `--runtime`, by default what the daemon serves with), paced at
`--interval`. First `--polls` polls alone; then the same loop while
`python -m sentinel.retrain.child` (what a scheduled retraining run starts, with
`retrain.threads` 1 and nice 10) trains on a simulated day of 6 services and grades the
candidate. Prints p50/p99 of the per-poll latency of both phases as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import yaml

from sentinel.config.load import load_config
from sentinel.core.features import Scaler, tracked_metrics
from sentinel.core.pipeline import Pipeline
from sentinel.core.samples import Sample
from sentinel.model.fastlstm import FastScorer, LstmWeights, available_runtimes
from sentinel.retrain.child import THREAD_VARIABLES
from sentinel.sim import simulate
from sentinel.training.keras_model import Scorer, build_model

ROOT = Path(__file__).resolve().parents[1]


def polls(services: int, metrics: tuple[str, ...], start_ts: int):
    """An endless stream of polls: one sample per service per 10 s step."""
    rng = np.random.default_rng(0)
    base = rng.uniform(50, 5000, services)
    step = 0
    while True:
        ts = start_ts + 10 * step
        yield [Sample(f"svc-{i}", float(ts), {
            "qps": float(base[i] * rng.uniform(0.9, 1.1)), "p99_ms": float(rng.uniform(40, 300)),
            "error_rate": float(rng.uniform(0, 0.01)), "cpu": float(rng.uniform(0.2, 0.8)),
            **{m: 0.0 for m in metrics if m not in ("qps", "p99_ms", "error_rate", "cpu")}})
            for i in range(services)]
        step += 1


def measure(pipeline: Pipeline, stream, n_polls: int | None, interval: float,
            until=lambda: False) -> list[float]:
    latencies = []
    while (n_polls is None or len(latencies) < n_polls) and not (n_polls is None and until()):
        started = time.perf_counter()
        pipeline.process(next(stream))
        latencies.append(time.perf_counter() - started)
        time.sleep(max(0.0, interval - latencies[-1]))
    return latencies


def figures(latencies: list[float]) -> dict[str, float]:
    ms = np.array(latencies) * 1000
    return {"polls": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "config" / "sentinel.yaml"))
    parser.add_argument("--services", type=int, default=200, help="windows per poll")
    parser.add_argument("--polls", type=int, default=300, help="polls measured alone")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between polls")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the training child")
    parser.add_argument("--threads", type=int, default=1, help="retrain.threads")
    parser.add_argument("--runtime", default=available_runtimes()[0],
                        choices=["tensorflow", *available_runtimes()])
    args = parser.parse_args()
    config = load_config(args.config)
    n_features = len(config.features)
    model = build_model(config.window_steps, n_features, config.training.lstm_units)
    scaler = Scaler((0.0,) * n_features, (1.0,) * n_features)
    scorer = (Scorer(model, scaler, config) if args.runtime == "tensorflow"
              else FastScorer(LstmWeights.from_keras(model), scaler, config, args.runtime))
    pipeline = Pipeline(config, scorer)
    stream = polls(args.services, tracked_metrics(config), simulate.DEFAULT_START_TS)
    measure(pipeline, stream, config.window_steps + 5, 0.0)  # fill the windows, trace once
    alone = measure(pipeline, stream, args.polls, args.interval)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "history").mkdir()
        day = simulate.simulate(services=6, days=1, seed=1).samples
        simulate.write_jsonl(day, work / "history" / "day.jsonl")
        raw = yaml.safe_load(Path(args.config).read_text())
        raw.setdefault("training", {})["epochs"] = args.epochs
        (work / "config.yaml").write_text(yaml.safe_dump(raw))
        env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(args.threads))}
        started = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-m", "sentinel.retrain.child", "--config", str(work / "config.yaml"),
             "--history", str(work / "history"), "--holdout-from", str(day[-1]["ts"] - 6 * 3600),
             "--out", str(work / "candidate"), "--threads", str(args.threads)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        during = measure(pipeline, stream, None, args.interval, lambda: child.poll() is not None)
        out = child.communicate()[0].decode().strip().splitlines()
        child_seconds = time.monotonic() - started
    print(json.dumps({
        "services_per_poll": args.services, "interval_s": args.interval, "cpus": os.cpu_count(),
        "runtime": args.runtime, "load_avg_1m": os.getloadavg()[0],
        "alone": figures(alone), "with_retrain": figures(during),
        "p99_ratio": round(figures(during)["p99_ms"] / figures(alone)["p99_ms"], 2),
        "retrain_child_s": round(child_seconds, 1), "retrain_child_rc": child.returncode,
        "candidate_pr_auc": json.loads(out[-1])["candidate"]["pr_auc"] if child.returncode == 0
        and out else None}))


if __name__ == "__main__":
    main()
