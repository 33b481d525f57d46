"""The pure core of the data flow, shared by `sentinel run` and `sentinel backtest`.

    samples -> buckets (event time) -> windows -> one batched score -> alert transitions

`Pipeline.process` takes the samples of one poll (or one chunk of a file) and returns what
they caused. No clock, no I/O: the daemon wraps it with Kafka and HTTP, the backtest with a
file, and both therefore produce the same alerts for the same stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from sentinel.config.schema import AlertingConfig, Config
from sentinel.core.alerts import AlertMachine, AlertTransition
from sentinel.core.buckets import Bucket, Bucketer
from sentinel.core.context import ContextBatch, ContextLayout, ContextProvider
from sentinel.core.features import tracked_metrics
from sentinel.core.labels import rule_state
from sentinel.core.samples import Sample
from sentinel.core.windows import Window, WindowStore, max_missing_steps, scorable


class RiskModel(Protocol):
    def score(self, windows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        """(n, window_steps, n_metrics) raw windows and their context channels (n,
        window_steps, k) or None -> risk in [0, 1] per window, one call."""
        ...


def context_layout(model: RiskModel | None) -> ContextLayout:
    """The context channels a model expects (`sentinel.core.context`); none for a model
    that does not say (the static baseline, test fakes, models from before)."""
    layout = getattr(model, "context", None)
    return layout if isinstance(layout, ContextLayout) else ContextLayout()


@dataclass(frozen=True, slots=True)
class Score:
    service: str
    ts: int  # start of the window's last step
    risk: float


@dataclass(slots=True)
class StepResult:
    buckets: list[Bucket] = field(default_factory=list)  # closed by this step, for history
    scores: list[Score] = field(default_factory=list)
    transitions: list[AlertTransition] = field(default_factory=list)
    late: list[Sample] = field(default_factory=list)  # beyond the allowed lateness: not scored
    unscorable: int = 0  # full windows with too many missing steps
    batch_size: int = 0  # windows in the one scoring call


class Pipeline:
    def __init__(self, config: Config, model: RiskModel | None,
                 alerting: AlertingConfig | None = None,
                 context: Mapping[str, ContextProvider] | None = None) -> None:
        """`alerting` has concrete thresholds (`AlertingConfig.resolved`); default: the config's
        with "auto" taken as 0.5. `context`: the configured context providers by name; a
        model gets the channels it records from them (neutral ones from a missing provider)."""
        self.config = config
        self.model = model
        self.context = dict(context or {})
        self.metrics = tracked_metrics(config)
        self.bucketer = Bucketer(self.metrics, config.step_seconds,
                                 config.stream.allowed_lateness_seconds)
        self.windows = WindowStore(len(self.metrics), config.window_steps)
        self.alerts = AlertMachine(alerting or config.alerting.resolved(None), config.step_seconds)
        self._feature_columns = np.arange(len(config.features))
        self._max_missing = max_missing_steps(config.window_steps,
                                              config.stream.max_missing_fraction)

    def process(self, samples: Iterable[Sample]) -> StepResult:
        late = [s for s in samples if self.bucketer.add(s) == "late"]
        result = self._advance(self.bucketer.close_ready())
        result.late = late
        return result

    def flush(self) -> StepResult:
        """Close every open bucket: the end of a replayed file."""
        return self._advance(self.bucketer.flush())

    def swap_model(self, model: RiskModel, alerting: AlertingConfig) -> None:
        """Score from the next step on with `model` and its thresholds (`alerting`, resolved).

        Buckets, windows and alert states are kept: the first window scored by the new model
        is the one after the last window the old model scored, and a firing alert stays
        firing (it resolves under the new resolve threshold)."""
        self.model = model
        self.alerts.config = alerting

    def drop(self, service: str) -> None:
        """Forget a service's buckets, window and alert state (partition revoked, evicted)."""
        self.bucketer.drop(service)
        self.windows.drop(service)
        self.alerts.drop(service)

    def _advance(self, buckets: list[Bucket]) -> StepResult:
        result = StepResult(buckets=buckets)
        windows = [w for w in map(self.windows.push, buckets) if w is not None]
        if not windows or self.model is None:
            return result
        stacked = np.stack([w.values for w in windows])
        ok = scorable(stacked, self._feature_columns, self._max_missing)
        result.unscorable = int((~ok).sum())
        result.batch_size = int(ok.sum())
        if not result.batch_size:
            return result
        kept_windows = [w for w, keep in zip(windows, ok, strict=True) if keep]
        context = self._context(kept_windows)
        risks = (self.model.score(stacked[ok]) if context is None
                 else self.model.score(stacked[ok], context))
        holding, failed = rule_state(stacked[ok], self.metrics, self.config.failure,
                                     self.config.failure_for_steps)
        # buckets come per service in ts order, so the alert machine sees each service's
        # steps in order, as it would one poll at a time
        for window, risk, hold, fail in zip(kept_windows, risks, holding, failed, strict=True):
            score = Score(window.service, window.ts, float(risk))
            result.scores.append(score)
            transition = self.alerts.observe(score.service, score.ts, score.risk, bool(hold),
                                             bool(fail))
            if transition is not None:
                result.transitions.append(self._with_planned_event(transition))
        return result

    def _with_planned_event(self, transition: AlertTransition) -> AlertTransition:
        """Names the sale calendar's event in progress (a provider with `event_at`)."""
        calendar = self.context.get("calendar")
        event_at = getattr(calendar, "event_at", None)
        event = event_at(transition.service, transition.ts) if event_at else None
        return replace(transition, planned_event=event.name) if event is not None else transition

    def _context(self, windows: list[Window]) -> np.ndarray | None:
        layout = context_layout(self.model)
        if not layout.providers:
            return None
        batch = ContextBatch(tuple(w.service for w in windows),
                             np.array([w.ts for w in windows], np.int64),
                             self.config.step_seconds, self.config.window_steps)
        return layout.build(batch, self.context)
