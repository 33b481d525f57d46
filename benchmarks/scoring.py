"""Scoring throughput: windows/s against batch size for each runtime, vs `model.predict` per window.

    python benchmarks/scoring.py [--steps 30 60] [--batches 1 16 64 256 1024 4096] [--seconds 2]

For each window length (30 steps = the issue's "default", 60 = config/sentinel.yaml's 10 min)
an untrained model of the shipped config's units (the cost does not depend on the weights;
random weights, so the risks are not constant) is scored by every runtime: TensorFlow (a
`tf.function` with a fixed signature, `sentinel.training.keras_model.Scorer`), ONNX Runtime and the NumPy
pass (`sentinel.model.fastlstm.FastScorer`), each on already prepared (scaled) input, for
`--seconds` per batch size. Also: `model.predict` on one window at a time (the tutorials'
way), the largest risk difference of each runtime against TensorFlow, the multiply-adds of
one window and the fraction of the two cores' peak the best figure reaches. Prints a table
and, last, the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from sentinel.config.load import load_config
from sentinel.core.features import Scaler
from sentinel.model.fastlstm import FastScorer, LstmWeights, available_runtimes
from sentinel.training.keras_model import Scorer, build_model


def cpu_peak() -> dict[str, object]:
    """Float32 multiply-adds per second of all cores, from /proc/cpuinfo, with the assumption."""
    info = Path("/proc/cpuinfo").read_text()
    flags = set(next(line for line in info.splitlines() if line.startswith("flags")).split())
    mhz = float(next(line for line in info.splitlines() if line.startswith("cpu MHz")).split(":")[1])
    amd = "AuthenticAMD" in info
    if "avx512f" in flags:
        # Zen 4 runs a 512-bit FMA as two 256-bit halves on its two FMA pipes: 16 lanes/cycle;
        # Intel server cores with two 512-bit FMA units: 32
        fma, why = (16, "AVX-512 on Zen 4: 2 FMA pipes x 8 float32 lanes") if amd else \
            (32, "AVX-512: 2 FMA units x 16 float32 lanes")
    elif "fma" in flags:
        fma, why = 16, "AVX2: 2 FMA units x 8 float32 lanes"
    else:
        fma, why = 4, "SSE: no FMA, ~4 float32 multiply-adds"
    cores = os.cpu_count() or 1
    return {"cores": cores, "mhz": mhz, "fma_per_core_cycle": fma, "assumption": why,
            "peak_macs_per_s": cores * fma * mhz * 1e6}


def rate(call: Callable[[np.ndarray], object], x: np.ndarray, batch: int, seconds: float) -> float:
    call(x[:batch])  # warm up (trace, allocate)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call(x[done % len(x): done % len(x) + batch] if batch < len(x) else x)
        done += batch
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="config/sentinel.yaml")
    parser.add_argument("--steps", type=int, nargs="+", default=[30, 60])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256, 1024, 4096])
    parser.add_argument("--seconds", type=float, default=2.0, help="per runtime and batch size")
    parser.add_argument("--predict-windows", type=int, default=200)
    args = parser.parse_args()
    base = load_config(args.config)
    n_features = len(base.features)
    scaler = Scaler((0.0,) * n_features, (1.0,) * n_features)
    peak = cpu_peak()
    out: dict[str, object] = {"cpu": peak, "load_avg_1m": os.getloadavg()[0], "runs": []}
    print(f"peak: {peak['cores']} cores x {peak['fma_per_core_cycle']} FMA/cycle x "
          f"{peak['mhz']:.0f} MHz = {peak['peak_macs_per_s'] / 1e9:.1f} G multiply-adds/s "
          f"({peak['assumption']})")
    for steps in args.steps:
        config = replace(base, window_seconds=steps * base.step_seconds)
        rng = np.random.default_rng(0)
        model = build_model(steps, n_features, config.training.lstm_units)
        model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32)
                           for w in model.get_weights()])
        weights = LstmWeights.from_keras(model)
        x = rng.normal(0, 1.5, (max(args.batches) * 2, steps, n_features)).astype(np.float32)
        scorers = {"tensorflow": Scorer(model, scaler, config)}
        scorers.update({r: FastScorer(weights, scaler, config, r) for r in available_runtimes()})
        reference = scorers["tensorflow"].score_prepared(x[:2048])
        macs = weights.multiply_adds_per_window(steps)
        run: dict[str, object] = {"steps": steps, "units": list(config.training.lstm_units),
                                  "macs_per_window": macs, "windows_per_s": {},
                                  "max_abs_diff_vs_tensorflow": {}}
        print(f"\n{steps} steps, units {list(config.training.lstm_units)}, "
              f"{macs:,} multiply-adds per window")
        print(f"{'batch':>6} " + " ".join(f"{r:>12}" for r in scorers))
        table: dict[str, dict[int, float]] = {r: {} for r in scorers}
        for batch in args.batches:
            for name, scorer in scorers.items():
                table[name][batch] = rate(scorer.score_prepared, x, batch, args.seconds)
            print(f"{batch:>6} " + " ".join(f"{table[r][batch]:>12,.0f}" for r in scorers))
        for name, scorer in scorers.items():
            diff = float(np.abs(scorer.score_prepared(x[:2048]) - reference).max())
            run["max_abs_diff_vs_tensorflow"][name] = diff  # type: ignore[index]
            run["windows_per_s"][name] = {b: round(v) for b, v in table[name].items()}  # type: ignore[index]
        one = x[:1]
        model.predict(one, verbose=0)
        started = time.perf_counter()
        for i in range(args.predict_windows):
            model.predict(x[i: i + 1], verbose=0)
        per_window = args.predict_windows / (time.perf_counter() - started)
        best_name, best_batch = max(((r, b) for r in table for b in table[r]),
                                    key=lambda rb: table[rb[0]][rb[1]])
        best = table[best_name][best_batch]
        run.update({"predict_per_window_windows_per_s": round(per_window, 1),
                    "best": {"runtime": best_name, "batch": best_batch, "windows_per_s": round(best),
                             "ratio_to_predict": round(best / per_window),
                             "fraction_of_peak": round(best * macs / float(peak["peak_macs_per_s"]), 3)}})
        print(f"model.predict per window: {per_window:,.1f} windows/s; best {best_name} at batch "
              f"{best_batch}: {best:,.0f} windows/s = {best / per_window:,.0f}x predict, "
              f"{best * macs / 1e9:.1f} G multiply-adds/s = "
              f"{100 * best * macs / float(peak['peak_macs_per_s']):.1f}% of peak")
        print("max |risk - tensorflow|: " + ", ".join(
            f"{r} {d:.1e}" for r, d in run["max_abs_diff_vs_tensorflow"].items()))  # type: ignore[union-attr]
        out["runs"].append(run)  # type: ignore[union-attr]
    out["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
