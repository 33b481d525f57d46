"""Scoring throughput: one compiled batched call vs `model.predict` per window.

    python benchmarks/scoring.py [--windows 20000] [--predict-windows 200]

Uses an untrained model of the shipped config's shape (the cost does not depend on the
weights). Prints windows/s for both and their ratio as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from sentinel.config import load_config
from sentinel.features import Scaler, tracked_metrics
from sentinel.model import Scorer, build_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="config/sentinel.yaml")
    parser.add_argument("--windows", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1000, help="windows per batched call")
    parser.add_argument("--predict-windows", type=int, default=200)
    args = parser.parse_args()
    config = load_config(args.config)
    n_features = len(config.features)
    model = build_model(config.window_steps, n_features, config.training.lstm_units)
    scorer = Scorer(model, Scaler((0.0,) * n_features, (1.0,) * n_features), config)
    rng = np.random.default_rng(0)
    raw = rng.random((args.windows, config.window_steps, len(tracked_metrics(config)))) * 100
    scorer.score(raw[: args.batch])  # trace once
    started = time.perf_counter()
    for i in range(0, args.windows, args.batch):
        scorer.score(raw[i: i + args.batch])
    batched = args.windows / (time.perf_counter() - started)
    x = scorer.prepare(raw[: args.predict_windows])
    model.predict(x[:1], verbose=0)
    started = time.perf_counter()
    for i in range(args.predict_windows):
        model.predict(x[i: i + 1], verbose=0)
    per_window = args.predict_windows / (time.perf_counter() - started)
    print(json.dumps({"batched_windows_per_s": round(batched), "batch": args.batch,
                      "predict_per_window_windows_per_s": round(per_window, 1),
                      "ratio": round(batched / per_window, 1), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
