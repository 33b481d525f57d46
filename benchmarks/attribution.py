"""Do the drivers name the right metrics? Two held-out checks of sentinel.core.attribution.

    .venv/bin/python benchmarks/attribution.py sim [--services 6 --days 2 --seed 11]
    .venv/bin/python benchmarks/attribution.py asd [--asd ../shared/data/asd] [--model DIR]
    .venv/bin/python benchmarks/attribution.py cost [--services 100000 --firing 0.01]

Both replay held-out data through the daemon's pipeline (sentinel.training.backtest.replay,
attribution on) and look at the firing that *detected* each failure: the first firing in
[start - horizon, start + step], else the episode still firing at start + step (the
detection of sentinel.training.quality). The metric ranking is the attribution's: every
feature by its contribution (risk drop when occluded by the window's median), which is the
order of the alert's `drivers`.

- **sim**: the shipped demo model (trained on simulator seed 1) on simulator seed `--seed`.
  The simulator knows why each service failed: an incident on the service (capacity loss
  or a leak: its cpu climbs first; a slow dependency: p99 climbs while cpu does not), an
  incident on a dependency (the service waits on it: p99), or none (a flash sale's traffic:
  qps). Figure: the share of detected failures whose top driver is that cause metric.
- **asd**: a model trained as benchmarks/quality.py trains set (c) (history + labelled rows
  before 1703160000, benchmarks/configs/asd.yaml), replayed on the held-out half. For each
  labelled incident there (interpretation.json: the metrics the engineers said it showed in)
  that was detected: is one of the top 3 attributed metrics labelled, and the overlap at
  k = 3 and 5 (labelled metrics among the top k / min(k, labelled)). Beside them: a random
  ranking (exact expectation, hypergeometric) and the largest |z| ranking (the last step's
  distance from the window's median in robust sd, the `z` of a driver).

- **cost**: the scoring loop (`Pipeline.process`, one call per poll of `--poll` samples, the
  shipped `kafka.max_poll_records`) at `--services` services with a `--firing` share of them
  firing, with attribution (`alerting.drivers: 3`) and without (`drivers: 0`). The model
  is benchmarks/kit.py's hand-set LSTM of the shipped shape that fires on `error_rate`,
  served by ONNX Runtime as the daemon serves it, so every window (and every occluded one)
  costs a real model call; every 1/`--firing`-th service gets error_rate 1 from the first
  measured step, so they all fire together at the third and are re-explained every
  `drivers_refresh` (60 s = 6 steps): the synchronised worst case. Windows are pre-filled
  (the WindowStore's arrays set directly: replaying 60 steps of 100,000 services first
  would take minutes of a shared CPU). Reported: per-poll latency p50/p99/max of each run.

Prints a table and, last, the figures as one JSON line. Small runs: about 1-2 min each on 2
shared cores (asd trains for ~1 min unless --model is given).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.config.load import load_config
from sentinel.config.schema import Config
from sentinel.core.alerts import AlertTransition
from sentinel.core.attribution import Attributor, normal_values
from sentinel.core.labels import FailureEvent
from sentinel.core.samples import Sample, decode
from sentinel.model.artifact import LoadedModel, load_model
from sentinel.training.backtest import Replay, replay
from sentinel.training.history import Labelled, label, series_from_buckets

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "sentinel" / "sim" / "demo_model"
ASD_REPORT_FROM_TS = 1703160000
CAUSE_METRIC = {"capacity_loss": "cpu", "leak": "cpu", "dependency": "p99_ms",
                "upstream": "p99_ms", "sale": "qps"}


def decoded(lines: Sequence[str]) -> list[Sample]:
    return [s for s in (decode(line) for line in lines) if isinstance(s, Sample)]


def labelled_of(config: Config, run: Replay) -> dict[str, Labelled]:
    return {s: label(x, config) for s, x in series_from_buckets(run.buckets, config.step_seconds).items()}


def detecting_firing(config: Config, event: FailureEvent, transitions: Sequence[AlertTransition]
                     ) -> AlertTransition | None:
    """The firing that detected `event` (see the module docstring), or None (missed)."""
    start, horizon, step = event.start_ts, config.horizon_seconds, config.step_seconds
    mine = sorted((t for t in transitions if t.service == event.service), key=lambda t: t.ts)
    for t in mine:
        if t.state == "firing" and start - horizon <= t.ts <= start + step:
            return t
    firing = None
    for t in mine:
        if t.ts > start + step:
            break
        firing = t if t.state == "firing" else None
    return firing


def ranking(config: Config, model: LoadedModel, item: Labelled, firing: AlertTransition
            ) -> tuple[list[str], list[str]]:
    """(features by attribution, features by |z|) for the window the firing was scored on."""
    names = config.feature_names
    row = int(item.series.index(firing.ts))
    window = item.series.values[row - config.window_steps + 1: row + 1][None]
    attributor = Attributor(names, config.step_seconds, top=len(names))
    contributions = attributor.contributions(model.scorer, window, np.array([firing.risk]))[0]
    median, scale = normal_values(window[..., : len(names)])
    last = window[0, -1, : len(names)]
    z = np.nan_to_num(np.abs((last - median[0]) / scale[0]), nan=0.0)
    by_contribution = [names[j] for j in np.argsort(-contributions, kind="stable")]
    by_z = [names[j] for j in np.argsort(-z, kind="stable")]
    if firing.drivers:  # the pipeline's drivers are this same ranking's head
        assert [d.metric for d in firing.drivers] == by_contribution[: len(firing.drivers)], (
            firing, by_contribution)
    return by_contribution, by_z


# --- sim ---------------------------------------------------------------------------------------

def incidents_of(services: int, days: float, seed: int) -> list[Any]:
    """The incidents `simulate(services, days, seed)` schedules (same generator, same draws)."""
    from sentinel.sim import simulate as sim

    rng = np.random.default_rng(seed)
    n = round(days * sim.STEPS_PER_DAY)
    svc = sim.profiles(services)
    sales = sim.schedule_sales(rng, n, sim.DEFAULT_START_TS)
    return sim.schedule_incidents(rng, svc, n, sales)


def true_cause(event: FailureEvent, incidents: Sequence[Any], deps: Mapping[str, tuple[str, ...]]
               ) -> str:
    from sentinel.sim import simulate as sim

    def active(inc: Any) -> bool:
        first = sim.DEFAULT_START_TS + sim.STEP_SECONDS * inc.start_step
        last = first + sim.STEP_SECONDS * (inc.build_steps + max(inc.hold_steps, 0)
                                           + 5 * sim.STEPS_PER_MINUTE)
        return first <= event.start_ts <= last

    own = [i for i in incidents if i.service == event.service and active(i)]
    if own:
        return str(own[0].cause)
    if any(i.service in deps.get(event.service, ()) and active(i) for i in incidents):
        return "upstream"
    return "sale"


def run_sim(args: argparse.Namespace) -> dict[str, Any]:
    from sentinel.sim import simulate as sim

    config = load_config(ROOT / "config" / "sentinel.yaml")
    model = load_model(args.model or DEMO_MODEL, config)
    simulation = sim.simulate(args.services, args.days, args.seed)
    samples = decoded([json.dumps(s) for s in simulation.samples])
    run = replay(config, model.scorer, samples, model.alerting(config))
    labelled = labelled_of(config, run)
    incidents = incidents_of(args.services, args.days, args.seed)
    deps = {p.name: p.deps for p in sim.profiles(args.services)}
    rows = []
    for service, item in sorted(labelled.items()):
        for event in item.events:
            if event.start_ts - config.horizon_seconds < item.series.first_ts + config.window_seconds:
                continue  # not counted: the data does not cover a window + horizon before it
            firing = detecting_firing(config, event, run.transitions)
            cause = true_cause(event, incidents, deps)
            if firing is None:
                rows.append({"service": service, "start_ts": event.start_ts, "cause": cause,
                             "detected": False})
                continue
            by_contribution, by_z = ranking(config, model, item, firing)
            rows.append({"service": service, "start_ts": event.start_ts, "cause": cause,
                         "detected": True, "phase": firing.phase, "lead_s": event.start_ts - firing.ts,
                         "top": by_contribution[0], "top_z": by_z[0],
                         "drivers": [d.text for d in firing.drivers],
                         "first": by_contribution[0] == CAUSE_METRIC[cause],
                         "top2": CAUSE_METRIC[cause] in by_contribution[:2],
                         "first_z": by_z[0] == CAUSE_METRIC[cause]})
    detected = [r for r in rows if r["detected"]]
    by_cause = {}
    for cause in CAUSE_METRIC:
        mine = [r for r in detected if r["cause"] == cause]
        if mine:
            by_cause[cause] = {"detected": len(mine), "cause_metric": CAUSE_METRIC[cause],
                               "ranked_first": sum(r["first"] for r in mine),
                               "in_top2": sum(r["top2"] for r in mine),
                               "ranked_first_by_z": sum(r["first_z"] for r in mine)}
    return {"set": "sim", "model": str(args.model or "sentinel/sim/demo_model (seed 1)"),
            "data": f"simulate --services {args.services} --days {args.days} --seed {args.seed}",
            "failures": len(rows), "detected": len(detected),
            "cause_ranked_first": _share(sum(r["first"] for r in detected), len(detected)),
            "cause_ranked_first_by_z": _share(sum(r["first_z"] for r in detected), len(detected)),
            "cause_in_top2": _share(sum(r["top2"] for r in detected), len(detected)),
            "by_cause": by_cause, "rows": rows}


# --- asd ---------------------------------------------------------------------------------------

def prepare_asd(data: Path, work: Path, config: Config) -> tuple[list[Path], Path]:
    """History + labelled rows before the cut to train on; from one window + horizon before
    the cut to the end to test on (as benchmarks/quality.py's set c)."""
    history, train, test = work / "history.jsonl", work / "incidents-train.jsonl", work / "test.jsonl"
    with gzip.open(data / "history.jsonl.gz", "rt", encoding="utf-8") as src, history.open("w") as dst:
        shutil.copyfileobj(src, dst)
    test_from = ASD_REPORT_FROM_TS - config.window_seconds - config.horizon_seconds
    with (gzip.open(data / "incidents.jsonl.gz", "rt", encoding="utf-8") as src,
          train.open("w") as to_train, test.open("w") as to_test):
        for line in src:
            ts = json.loads(line)["ts"]
            if ts < ASD_REPORT_FROM_TS:
                to_train.write(line)
            if ts >= test_from:
                to_test.write(line)
    return [history, train], test


def random_expectation(n: int, labelled: int, k: int) -> tuple[float, float]:
    """(P(top k holds >= 1 labelled), E[overlap at k]) for a uniformly random ranking."""
    k = min(k, n)
    miss = math.comb(n - labelled, k) / math.comb(n, k) if n - labelled >= k else 0.0
    return 1.0 - miss, (k * labelled / n) / min(k, labelled)


def run_asd(args: argparse.Namespace) -> dict[str, Any]:
    config_path = ROOT / "benchmarks" / "configs" / "asd.yaml"
    config = load_config(config_path)
    work = Path(args.work or tempfile.mkdtemp(prefix="attribution-asd-"))
    work.mkdir(parents=True, exist_ok=True)
    train_paths, test = prepare_asd(Path(args.asd), work, config)
    model_dir = Path(args.model) if args.model else work / "model"
    if not args.model:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([sys.executable, "-m", "sentinel", "train", "--config", str(config_path),
                        "--history", *map(str, train_paths), "--out", str(model_dir)],
                       check=True, env=env, cwd=ROOT, capture_output=True)
    model = load_model(model_dir, config)
    run = replay(config, model.scorer, decoded(test.read_text().splitlines()), model.alerting(config))
    labelled = labelled_of(config, run)
    interpretation = json.loads((Path(args.asd) / "interpretation.json").read_text())
    n = len(config.feature_names)
    rows = []
    for service, incidents in sorted(interpretation.items()):
        for incident in incidents:
            if incident["start_ts"] < ASD_REPORT_FROM_TS or service not in labelled:
                continue
            event = FailureEvent(service, incident["start_ts"], incident["end_ts"])
            firing = detecting_firing(config, event, run.transitions)
            if firing is None:
                rows.append({"service": service, "start_ts": event.start_ts, "detected": False})
                continue
            by_contribution, by_z = ranking(config, model, labelled[service], firing)
            truth = set(incident["metrics"])
            row: dict[str, Any] = {"service": service, "start_ts": event.start_ts, "detected": True,
                                   "phase": firing.phase, "labelled": len(truth),
                                   "top5": by_contribution[:5], "top5_z": by_z[:5]}
            for k in (3, 5):
                for name, ranked in (("attr", by_contribution), ("z", by_z)):
                    row[f"{name}_overlap{k}"] = len(truth & set(ranked[:k])) / min(k, len(truth))
                row[f"random_overlap{k}"] = random_expectation(n, len(truth), k)[1]
            row["attr_hit3"] = bool(truth & set(by_contribution[:3]))
            row["z_hit3"] = bool(truth & set(by_z[:3]))
            row["random_hit3"] = random_expectation(n, len(truth), 3)[0]
            rows.append(row)
    detected = [r for r in rows if r["detected"]]

    def mean(key: str) -> float | None:
        return round(float(np.mean([r[key] for r in detected])), 3) if detected else None

    figures = {name: {"top3_hit_share": mean(f"{name}_hit3"), "overlap_at_3": mean(f"{name}_overlap3"),
                      "overlap_at_5": mean(f"{name}_overlap5")} for name in ("attr", "z", "random")}
    return {"set": "asd", "model": str(model_dir), "incidents": len(rows), "detected": len(detected),
            "phases": {p: sum(r.get("phase") == p for r in detected) for p in ("predicted", "failing")},
            "figures": figures, "rows": rows}


# --- cost --------------------------------------------------------------------------------------

def run_cost(args: argparse.Namespace) -> dict[str, Any]:
    import time
    from dataclasses import replace

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from kit import write_model

    from sentinel.core.features import tracked_metrics
    from sentinel.core.pipeline import Pipeline

    base = load_config(ROOT / "config" / "sentinel.yaml")
    work = Path(tempfile.mkdtemp(prefix="attribution-cost-"))
    write_model(work / "model", ROOT / "config" / "sentinel.yaml", fires_on="error_rate")
    model = load_model(work / "model", base, runtime="onnxruntime")
    metrics = tracked_metrics(base)
    every = round(1 / args.firing)
    rng = np.random.default_rng(0)
    qps = rng.uniform(50, 5000, args.services)
    names = [f"svc-{i}" for i in range(args.services)]
    out: dict[str, Any] = {"services": args.services, "firing_share": args.firing,
                           "poll": args.poll, "steps": args.steps, "cpus": os.cpu_count(),
                           "runtime": model.scorer.runtime, "window_steps": base.window_steps}
    for drivers in (0, 3):
        config = replace(base, alerting=replace(base.alerting, drivers=drivers, threshold=0.5))
        pipeline = Pipeline(config, model.scorer, config.alerting.resolved(0.5))
        start_ts = 1_763_942_400
        fill = np.column_stack([qps, np.full(args.services, 100.0), np.zeros(args.services),
                                np.full(args.services, 0.4)])
        for i, name in enumerate(names):  # pre-filled windows ending one step before start_ts
            pipeline.windows._values[name] = np.repeat(fill[i][None], config.window_steps, axis=0)
            pipeline.windows._filled[name] = config.window_steps
        explained: list[float] = [0, 0.0, 0.0]  # windows explained, seconds, longest call
        if pipeline.attributor is not None:
            explain = pipeline.attributor.explain

            def counting(model_: Any, windows: np.ndarray, risks: np.ndarray,
                         explain: Any = explain, explained: list[float] = explained) -> Any:
                started = time.perf_counter()
                found = explain(model_, windows, risks)
                took = time.perf_counter() - started
                explained[0] += len(windows)
                explained[1] += took
                explained[2] = max(explained[2], took)
                return found

            pipeline.attributor.explain = counting  # type: ignore[method-assign]
        latencies, firing = [], []
        load_before = os.getloadavg()[0]
        for step in range(args.steps):
            ts = start_ts + 10 * step
            samples = [Sample(name, float(ts + 1), {
                "qps": float(qps[i] * rng.uniform(0.9, 1.1)), "p99_ms": float(rng.uniform(40, 300)),
                "error_rate": 1.0 if i % every == 0 else float(rng.uniform(0, 0.01)),
                "cpu": float(rng.uniform(0.2, 0.8))}) for i, name in enumerate(names)]
            assert set(metrics) <= set(samples[0].metrics)
            for i in range(0, len(samples), args.poll):
                started = time.perf_counter()
                pipeline.process(samples[i: i + args.poll])
                latencies.append(time.perf_counter() - started)
            firing.append(pipeline.alerts.firing_count())
        ms = np.array(latencies) * 1000
        out["with_attribution" if drivers else "without_attribution"] = {
            "polls": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
            "total_s": round(float(ms.sum()) / 1000, 2), "firing_at_end": firing[-1],
            "windows_explained": int(explained[0]), "explain_s": round(explained[1], 3),
            "explain_longest_call_ms": round(explained[2] * 1000, 2),
            "load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0]}
    shutil.rmtree(work, ignore_errors=True)
    return out


def _share(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("set", choices=("sim", "asd", "cost"))
    p.add_argument("--firing", type=float, default=0.01, help="cost: share of services firing")
    p.add_argument("--poll", type=int, default=2000, help="cost: samples per Pipeline.process")
    p.add_argument("--steps", type=int, default=14, help="cost: 10 s steps fed (the last "
                   "~3 close within stream.allowed_lateness only later)")
    p.add_argument("--services", type=int, default=None,
                   help="sim: services simulated (default 6); cost: services (default 100000)")
    p.add_argument("--days", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--asd", default=str(ROOT.parent / "shared" / "data" / "asd"))
    p.add_argument("--model", help="a trained model directory (default: sim: the demo model; "
                   "asd: trained now)")
    p.add_argument("--work", help="asd: where the data and the model go (default: a temp dir)")
    args = p.parse_args(argv)
    if args.services is None:
        args.services = 100_000 if args.set == "cost" else 6
    if args.set == "cost":
        result = run_cost(args)
        print(json.dumps(result))
        return 0
    result = run_sim(args) if args.set == "sim" else run_asd(args)
    if args.set == "sim":
        print(f"{result['data']}: {result['detected']} of {result['failures']} failures detected; "
              f"true cause metric ranked first: {result['cause_ranked_first']} "
              f"(largest |z| first: {result['cause_ranked_first_by_z']}); in the top 2: "
              f"{result['cause_in_top2']}")
        for cause, c in result["by_cause"].items():
            print(f"  {cause:14s} ({c['cause_metric']}): {c['ranked_first']}/{c['detected']} "
                  f"first, {c['in_top2']}/{c['detected']} in the top 2 "
                  f"(|z| first: {c['ranked_first_by_z']}/{c['detected']})")
    else:
        print(f"ASD held-out half: {result['detected']} of {result['incidents']} labelled incidents "
              f"detected {result['phases']}")
        print("ranking      top-3 holds a labelled metric   overlap@3   overlap@5")
        for name, label_ in (("attr", "attribution"), ("z", "largest |z|"), ("random", "random")):
            f = result["figures"][name]
            print(f"{label_:12s} {f['top3_hit_share']!s:>30s} {f['overlap_at_3']!s:>11s} "
                  f"{f['overlap_at_5']!s:>11s}")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if os.environ.get("ATTRIBUTION_ROWS"):
        Path(os.environ["ATTRIBUTION_ROWS"]).write_text(json.dumps(result["rows"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
