"""Training time and training windows/s: the reference history, or many services.

    python benchmarks/train_time.py                                   # 6 services x 4 days (seed 1)
    python benchmarks/train_time.py --services 100 --days 1 --epochs 2

Simulates the history into a temporary directory, trains with the given config (`--epochs`
overrides training.epochs; early stopping still applies) and prints, as JSON: the wall time
of simulate and of `sentinel train` as a whole, the time inside Keras's `fit`, the windows
trained on per epoch, training windows/s (windows x epochs / fit time) and the validation
figures. With `--extrapolate-days D` it also states what a history of D days would take at
the measured rates: fit time scales with the windows (linear in days), the rest (reading,
labelling, validation, baseline) is scaled linearly too; it is an extrapolation, not a run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from sentinel.config.load import load_config
from sentinel.sim.simulate import simulate, write_jsonl
from sentinel.training.train import train


def timed_fit() -> list[float]:
    """Wrap keras.Model.fit to record the seconds each call takes (benchmark instrumentation)."""
    spent: list[float] = []
    fit = keras.Model.fit

    def wrapper(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    keras.Model.fit = wrapper
    return spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="config/sentinel.yaml")
    parser.add_argument("--services", type=int, default=6)
    parser.add_argument("--days", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--extrapolate-days", type=float, default=None)
    args = parser.parse_args()
    config = load_config(args.config)
    max_epochs = config.training.epochs  # as configured, before --epochs
    if args.epochs:
        config = replace(config, training=replace(config.training, epochs=args.epochs))
    fit_seconds = timed_fit()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        history = Path(tmp) / "history.jsonl"
        write_jsonl(simulate(args.services, args.days, args.seed).samples, history)
        simulated = time.perf_counter() - started
        started = time.perf_counter()
        summary = train(config, [history], Path(tmp) / "model")
        trained = time.perf_counter() - started
    fit = sum(fit_seconds)
    windows_per_s = summary["windows"] * summary["epochs"] / fit
    out = {"services": args.services, "days": args.days, "window_steps": config.window_steps,
           "units": list(config.training.lstm_units), "simulate_seconds": round(simulated, 1),
           "train_seconds": round(trained, 1), "fit_seconds": round(fit, 1),
           "epochs": summary["epochs"], "windows": summary["windows"],
           "train_windows_per_s": round(windows_per_s), "cpus": os.cpu_count(),
           "load_avg_1m": [load_start, os.getloadavg()[0]], "validation": summary["validation"]}
    if args.extrapolate_days:
        scale = args.extrapolate_days / args.days
        per_epoch = fit / summary["epochs"] * scale
        out["extrapolated"] = {
            "days": args.extrapolate_days, "windows_per_epoch": round(summary["windows"] * scale),
            "fit_seconds_per_epoch": round(per_epoch),
            "other_seconds": round((trained - fit) * scale),
            "train_seconds_at_measured_epochs": round(per_epoch * summary["epochs"]
                                                      + (trained - fit) * scale),
            "max_epochs": max_epochs,
            "train_seconds_at_max_epochs": round(per_epoch * max_epochs + (trained - fit) * scale)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
