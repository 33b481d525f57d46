"""The static-threshold detector every backtest compares the model with.

It fires when one feature's latest value is at or above a fixed threshold, through the same
alert state machine as the model. Training tunes it on the training part of the history:
over every feature and a ladder of high quantiles, it keeps the rule with the best early
recall among those within the false-alert budget (or, if none is, the fewest false alerts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sentinel.config.schema import Config
from sentinel.errors import DataError
from sentinel.training.dataset import WindowSet
from sentinel.training.evaluate import Coverage, evaluate, replay_alerts

BINARY_THRESHOLD = 0.5  # the baseline's risk is 0 or 1; any threshold in (0, 1] reads it alike
QUANTILES = (0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
FALSE_ALERTS_PER_DAY_BUDGET = 1.0


@dataclass(frozen=True)
class StaticThreshold:
    column: int
    threshold: float

    def score(self, windows: np.ndarray) -> np.ndarray:
        latest = windows[:, -1, self.column]
        with np.errstate(invalid="ignore"):
            return np.where(latest >= self.threshold, 1.0, 0.0)


def baseline_from_metadata(metadata: dict[str, Any]) -> StaticThreshold:
    rule = metadata["baseline"]["rule"]
    return StaticThreshold(list(metadata["metrics"]).index(rule["metric"]), float(rule["threshold"]))


def tune_baseline(config: Config, windows: WindowSet, rows: np.ndarray) -> dict[str, Any]:
    latest = np.stack([windows.labelled[k].series.values[s]
                       for k, s in zip(windows.series_index[rows], windows.step_index[rows],
                                       strict=True)])
    groups = [(k, rows_k) for k in np.unique(windows.series_index[rows])
              if len(rows_k := np.flatnonzero(windows.series_index[rows] == k))]
    coverage = {}
    events = {}
    for k, local in groups:
        item = windows.labelled[k]
        ts = windows.ts[rows[local]]
        coverage[item.series.service] = Coverage(int(ts[0]) - config.window_seconds, int(ts[-1]))
        events[item.series.service] = item.events
    alerting = config.alerting.resolved(BINARY_THRESHOLD)
    best: tuple[tuple[float, float], dict[str, Any]] | None = None
    for column, name in enumerate(config.feature_names):
        values = latest[:, column]
        finite = values[np.isfinite(values)]
        if not len(finite):
            continue
        for threshold in sorted(set(np.quantile(finite, QUANTILES).tolist())):
            with np.errstate(invalid="ignore"):
                risk = np.where(values >= threshold, 1.0, 0.0)
            transitions = []
            for k, local in groups:
                transitions += replay_alerts(alerting, config.step_seconds,
                                             windows.labelled[k].series.service,
                                             windows.ts[rows[local]], risk[local])
            figures = evaluate(config, events, transitions, coverage)["overall"]
            false_rate = figures["false_alerts_per_service_day"] or 0.0
            recall = figures["early_recall"] or 0.0
            within = false_rate <= FALSE_ALERTS_PER_DAY_BUDGET
            key = (1.0, recall) if within else (0.0, -false_rate)
            if best is None or key > best[0]:
                best = (key, {"rule": {"metric": name, "threshold": threshold},
                              "train": figures})
    if best is None:
        raise DataError("no feature has any value to tune a baseline on")
    return best[1]
