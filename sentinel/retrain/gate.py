"""The validation gate of retraining: grade two models on the same holdout, decide on one.

    >>> figures = grade(config, model, holdout_samples, from_ts)   # backtest figures
    >>> decide("pr_auc", candidate_figures, current_figures, margin=0.02)
    Decision(outcome='promoted', candidate=0.31, current=0.30, reason='...')

`grade` replays the holdout through the daemon's own pipeline (sentinel.training.backtest.replay),
with the model's own alert thresholds, and grades what it scored from `from_ts` on; the
samples before it only fill the first windows. A candidate is promoted when its score is at
least the current model's minus the margin; with no model in service, any candidate that
loads is better than none. A holdout without failures cannot tell two models apart: the
candidate is then rejected and the model in service stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sentinel.config.schema import Config
from sentinel.core.samples import Sample
from sentinel.model.artifact import LoadedModel
from sentinel.training.backtest import replay
from sentinel.training.evaluate import Coverage, evaluate
from sentinel.training.history import label, series_from_buckets

Outcome = Literal["promoted", "rejected"]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    candidate: float | None
    current: float | None
    reason: str


def grade(config: Config, model: LoadedModel, samples: Sequence[Sample], from_ts: float
          ) -> dict[str, Any]:
    """The backtest figures (sentinel.training.evaluate) of `model` on the windows ending at or after
    `from_ts`; `samples` in stream order, starting a window before `from_ts`."""
    run = replay(config, model.scorer, samples, model.alerting(config))
    labelled = {s: label(x, config) for s, x in
                series_from_buckets(run.buckets, config.step_seconds).items()}
    scores = [s for s in run.scores if s.ts >= from_ts]
    y = np.array([labelled[s.service].y[labelled[s.service].series.index(s.ts)]
                  for s in scores])
    risk = np.array([s.risk for s in scores])
    coverage = {s: Coverage(int(from_ts) - config.window_seconds, item.series.last_ts)
                for s, item in labelled.items()}
    events = {s: item.events for s, item in labelled.items()}
    transitions = [t for t in run.transitions if t.ts >= from_ts]
    overall = evaluate(config, events, transitions, coverage, y, risk)["overall"]
    return {**overall, "windows": len(scores)}


def decide(metric: str, candidate: dict[str, Any], current: dict[str, Any] | None,
           margin: float) -> Decision:
    """Promote when candidate >= current - margin on `metric` (pr_auc or early_recall)."""
    new = candidate.get(metric)
    if current is None:
        return Decision("promoted", new, None, "no model in service")
    old = current.get(metric)
    if new is None and old is None:
        return Decision("rejected", None, None,
                        f"the holdout holds no failure: {metric} cannot compare the models")
    if new is None:
        return Decision("rejected", None, old, f"the candidate has no {metric} on the holdout")
    if old is None:
        return Decision("promoted", new, None, f"the model in service has no {metric} on it")
    if new >= old - margin:
        return Decision("promoted", new, old,
                        f"{metric} {new:.4f} >= {old:.4f} - margin {margin}")
    return Decision("rejected", new, old, f"{metric} {new:.4f} < {old:.4f} - margin {margin}")
