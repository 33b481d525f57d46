"""Training time on the issue's reference history: 6 services x 4 days (seed 1).

    python benchmarks/train_time.py [--config config/sentinel.yaml]

Simulates the history into a temporary directory, trains with the given config and prints
the wall time of simulate and train, the epochs run and the validation figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sentinel.config import load_config
from sentinel.simulate import simulate, write_jsonl
from sentinel.train import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="config/sentinel.yaml")
    parser.add_argument("--services", type=int, default=6)
    parser.add_argument("--days", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        history = Path(tmp) / "history.jsonl"
        write_jsonl(simulate(args.services, args.days, args.seed).samples, history)
        simulated = time.perf_counter() - started
        started = time.perf_counter()
        summary = train(config, [history], Path(tmp) / "model")
        trained = time.perf_counter() - started
    print(json.dumps({"simulate_seconds": round(simulated, 1), "train_seconds": round(trained, 1),
                      "epochs": summary["epochs"], "windows": summary["windows"],
                      "cpus": os.cpu_count(), "validation": summary["validation"]}))


if __name__ == "__main__":
    main()
