"""Backtest: replay recorded samples through the daemon's own pipeline and grade the alerts.

The replay feeds the file in chunks of `CHUNK` messages, each chunk standing for one poll:
the same decode -> bucket -> window -> batched score -> alert path as `sentinel run`. The
static-threshold baseline stored with the model is replayed through the same pipeline.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.config.load import effective_topology
from sentinel.config.schema import AlertingConfig, Config
from sentinel.core.alerts import AlertTransition
from sentinel.core.buckets import Bucket
from sentinel.core.context import ContextProvider
from sentinel.core.pipeline import Pipeline, RiskModel, Score
from sentinel.core.samples import Sample
from sentinel.model.artifact import load_model
from sentinel.training.baseline import BINARY_THRESHOLD, baseline_from_metadata
from sentinel.training.dataset import offline_context
from sentinel.training.evaluate import Coverage, evaluate
from sentinel.training.history import DecodeStats, decode_lines, iter_jsonl_lines, label, series_from_buckets

CHUNK = 500


@dataclass
class Replay:
    scores: list[Score] = field(default_factory=list)
    transitions: list[AlertTransition] = field(default_factory=list)
    buckets: list[Bucket] = field(default_factory=list)
    late: int = 0


def replay(config: Config, model: RiskModel, samples: Sequence[Sample],
           alerting: AlertingConfig, context: Mapping[str, ContextProvider] | None = None
           ) -> Replay:
    """`context`: the context providers (default: the config's, `offline_context`)."""
    pipeline = Pipeline(config, model, alerting,
                        offline_context(config) if context is None else context,
                        topology=effective_topology(config))
    out = Replay()
    results = (pipeline.process(samples[i: i + CHUNK]) for i in range(0, len(samples), CHUNK))
    for result in [*results, pipeline.flush()]:
        out.scores += result.scores
        out.transitions += result.transitions
        out.buckets += result.buckets
        out.late += len(result.late)
    return out


def backtest(config: Config, model_dir: Path, data: Iterable[str | Path], alerts_out: Path,
             scores_out: Path, report_out: Path | None = None, plot_out: Path | None = None
             ) -> dict[str, Any]:
    lines = iter_jsonl_lines(data)  # DataError now for a path that does not exist
    loaded = load_model(model_dir, config)
    stats = DecodeStats()
    samples = list(decode_lines(lines, stats,
                                max_future_seconds=config.stream.max_future_seconds))
    alerting = loaded.alerting(config)
    run = replay(config, loaded.scorer, samples, alerting)
    base = replay(config, baseline_from_metadata(loaded.metadata), samples,
                  config.alerting.resolved(BINARY_THRESHOLD))
    stats.late = run.late
    labelled = {s: label(x, config) for s, x in
                series_from_buckets(run.buckets, config.step_seconds).items()}
    events = {s: item.events for s, item in labelled.items()}
    coverage = {s: Coverage(item.series.first_ts, item.series.last_ts)
                for s, item in labelled.items()}

    def targets(scores: list[Score]) -> np.ndarray:
        return np.array([labelled[s.service].y[labelled[s.service].series.index(s.ts)]
                         for s in scores])

    risk = np.array([s.risk for s in run.scores])
    report = {
        "model_version": loaded.version,
        "alert_thresholds": {"fire": alerting.threshold, "resolve": alerting.resolve_threshold},
        "data": stats.to_json(),
        "model": evaluate(config, events, run.transitions, coverage, targets(run.scores), risk),
        "baseline": {"rule": loaded.metadata["baseline"]["rule"],
                     **evaluate(config, events, base.transitions, coverage)},
    }
    write_alerts(run.transitions, alerts_out)
    write_scores(run.scores, scores_out)
    if report_out is not None:
        Path(report_out).write_text(json_text(report, indent=1))
    if plot_out is not None:
        from sentinel.training.plot import plot_backtest

        plot_backtest(config, labelled, run.scores, run.transitions, alerting.threshold or 0.5,
                      Path(plot_out))
    return report


def json_text(document: Any, indent: int | None = None) -> str:
    """Strict JSON: a figure that cannot be computed (NaN, e.g. no data) is written null."""
    return json.dumps(_finite(document), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_alerts(transitions: Iterable[AlertTransition], path: Path) -> None:
    with Path(path).open("w", encoding="utf-8") as out:
        for t in transitions:
            out.write(json.dumps(t.to_json()) + "\n")


def write_scores(scores: Iterable[Score], path: Path) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["service", "ts", "risk"])
        writer.writerows((s.service, s.ts, f"{s.risk:.6f}") for s in scores)
