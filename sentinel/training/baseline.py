"""The static-threshold detector every backtest compares the model with.

It fires when one feature's latest value is at or beyond a fixed threshold (above a high
quantile, or below a low one: a success ratio or a cache hit rate falls), through the same
alert state machine as the model. Training tunes it on the training part of the history:
over every feature, both directions and a ladder of quantiles, it keeps the rule with the
best early recall among those within the false-alert budget (or, if none is, the fewest
false alerts), and grades it on the validation part next to the model.
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
OPS = (">=", "<=")
FALSE_ALERTS_PER_DAY_BUDGET = 1.0


@dataclass(frozen=True)
class StaticThreshold:
    column: int
    threshold: float
    op: str = ">="

    def score(self, windows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        return fires(windows[:, -1, self.column], self.op, self.threshold)


def fires(values: np.ndarray, op: str, threshold: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        hit = values >= threshold if op == ">=" else values <= threshold
    return np.where(hit, 1.0, 0.0)


def baseline_from_metadata(metadata: dict[str, Any]) -> StaticThreshold:
    rule = metadata["baseline"]["rule"]
    return StaticThreshold(list(metadata["metrics"]).index(rule["metric"]), float(rule["threshold"]),
                           rule.get("op", ">="))


class _Replay:
    """The latest values of some windows, grouped per service, ready to replay rules on."""

    def __init__(self, config: Config, windows: WindowSet, rows: np.ndarray) -> None:
        self.config, self.windows, self.rows = config, windows, rows
        self.latest = np.stack([windows.labelled[k].series.values[s]
                                for k, s in zip(windows.series_index[rows],
                                                windows.step_index[rows], strict=True)])
        self.groups = [(k, local) for k in np.unique(windows.series_index[rows])
                       if len(local := np.flatnonzero(windows.series_index[rows] == k))]
        self.coverage, self.events = {}, {}
        for k, local in self.groups:
            item = windows.labelled[k]
            ts = windows.ts[rows[local]]
            self.coverage[item.series.service] = Coverage(int(ts[0]) - config.window_seconds,
                                                          int(ts[-1]))
            self.events[item.series.service] = [e for e in item.events if e.start_ts >= ts[0]]
        self.alerting = config.alerting.resolved(BINARY_THRESHOLD)

    def grade(self, column: int, op: str, threshold: float) -> dict[str, Any]:
        risk = fires(self.latest[:, column], op, threshold)
        transitions = []
        for k, local in self.groups:
            transitions += replay_alerts(self.alerting, self.config.step_seconds,
                                         self.windows.labelled[k].series.service,
                                         self.windows.ts[self.rows[local]], risk[local])
        return evaluate(self.config, self.events, transitions, self.coverage)["overall"]


def tune_baseline(config: Config, windows: WindowSet, rows: np.ndarray,
                  validation_rows: np.ndarray | None = None) -> dict[str, Any]:
    """The best rule on `rows` (training), with its figures there and on `validation_rows`."""
    replay = _Replay(config, windows, rows)
    best: tuple[tuple[float, float], dict[str, Any]] | None = None
    for column, name in enumerate(config.feature_names):
        values = replay.latest[:, column]
        finite = values[np.isfinite(values)]
        if not len(finite):
            continue
        for op in OPS:
            quantiles = QUANTILES if op == ">=" else tuple(1 - q for q in QUANTILES)
            for threshold in sorted(set(np.quantile(finite, quantiles).tolist())):
                figures = replay.grade(column, op, threshold)
                false_rate = figures["false_alerts_per_service_day"] or 0.0
                recall = figures["early_recall"] or 0.0
                within = false_rate <= FALSE_ALERTS_PER_DAY_BUDGET
                key = (1.0, recall) if within else (0.0, -false_rate)
                if best is None or key > best[0]:
                    best = (key, {"rule": {"metric": name, "op": op, "threshold": threshold},
                                  "train": figures})
    if best is None:
        raise DataError("no feature has any value to tune a static baseline on")
    if validation_rows is not None and len(validation_rows):
        rule = best[1]["rule"]
        best[1]["validation"] = _Replay(config, windows, validation_rows).grade(
            config.feature_names.index(rule["metric"]), rule["op"], rule["threshold"])
    return best[1]
