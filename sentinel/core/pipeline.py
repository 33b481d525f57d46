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
from sentinel.core.alerts import AlertMachine, AlertTransition, ServiceAlertState
from sentinel.core.attribution import Attributor, with_dependencies
from sentinel.core.buckets import Bucket, Bucketer
from sentinel.core.cause import cause_service
from sentinel.core.context import ContextBatch, ContextLayout, ContextProvider, with_context
from sentinel.core.dependencies import DependencyGate, Held
from sentinel.core.features import tracked_metrics
from sentinel.core.labels import rule_state
from sentinel.core.samples import Sample
from sentinel.core.topology import NAME, DependencySteps, Topology, inputs_of
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
    late_dependencies: int = 0  # scored with this many dependencies neutral for being late


@dataclass(slots=True)
class StepResult:
    buckets: list[Bucket] = field(default_factory=list)  # closed by this step, for history
    scores: list[Score] = field(default_factory=list)
    transitions: list[AlertTransition] = field(default_factory=list)
    # firing episodes whose drivers were recomputed (alerting.drivers_refresh): the same
    # episode as its firing, with this step's ts, risk and drivers; not a transition
    refreshed: list[AlertTransition] = field(default_factory=list)
    late: list[Sample] = field(default_factory=list)  # beyond the allowed lateness: not scored
    unscorable: int = 0  # full windows with too many missing steps
    batch_size: int = 0  # windows in the one scoring call
    dependency_late: int = 0  # (window, dependency) pairs scored without the dependency's step


class _PreparedScorer:
    """A topology model's raw windows and context scored as the gate path scores them
    (`prepare`, then `score_prepared`), for attribution's occluded windows."""

    def __init__(self, model: RiskModel) -> None:
        self.model = model

    def score(self, windows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        prepared = self.model.prepare(windows)  # type: ignore[attr-defined]
        return self.model.score_prepared(with_context(prepared, context))  # type: ignore[attr-defined]


class Pipeline:
    def __init__(self, config: Config, model: RiskModel | None,
                 alerting: AlertingConfig | None = None,
                 context: Mapping[str, ContextProvider] | None = None,
                 topology: Topology | None = None) -> None:
        """`alerting` has concrete thresholds (`AlertingConfig.resolved`); default: the config's
        with "auto" taken as 0.5. `context`: the configured context providers by name; a
        model gets the channels it records from them (neutral ones from a missing provider).
        `topology`: caller -> dependencies, for models that record the topology channels
        (`sentinel.core.dependencies` holds a caller's step until its dependencies closed it)."""
        self.config = config
        self.model = model
        self.context = dict(context or {})
        self.gate = DependencyGate(topology or Topology(), config.step_seconds,
                                   config.window_steps, config.stream.dependency_wait_seconds)
        self.metrics = tracked_metrics(config)
        self.bucketer = Bucketer(self.metrics, config.step_seconds,
                                 config.stream.allowed_lateness_seconds)
        self.windows = WindowStore(len(self.metrics), config.window_steps)
        self.alerts = AlertMachine(alerting or config.alerting.resolved(None), config.step_seconds)
        self._feature_columns = np.arange(len(config.features))
        self._max_missing = max_missing_steps(config.window_steps,
                                              config.stream.max_missing_fraction)
        top = config.alerting.drivers
        self.attributor = Attributor(config.feature_names, config.step_seconds, top) if top else None
        self._refresh = max(1, int(config.alerting.drivers_refresh_seconds))
        self._drivers_due: dict[str, int] = {}  # firing service -> ts of its next drivers

    def process(self, samples: Iterable[Sample]) -> StepResult:
        late = [s for s in samples if self.bucketer.add(s) == "late"]
        result = self._advance(self.bucketer.close_ready())
        result.late = late
        return result

    def flush(self) -> StepResult:
        """Close every open bucket and score every held window: the end of a replayed file."""
        result = self._advance(self.bucketer.flush())
        if self._uses_topology():
            released, late = self.gate.flush()
            self._score_held(result, released)
            result.dependency_late += late
        return result

    def receive(self, steps: Iterable[tuple[str, int, DependencySteps | None]]) -> StepResult:
        """Dependency steps closed by other replicas (the steps topic): held callers whose
        dependencies are now complete are scored (see `DependencyGate.receive`)."""
        result = StepResult(buckets=[])
        for service, ts, kept in steps:
            self.gate.receive(service, ts, kept)
        if self._uses_topology():
            released, result.dependency_late = self.gate.admit(())
            self._score_held(result, released)
            self.gate.prune()
        return result

    def set_topology(self, topology: Topology) -> None:
        """A new caller -> dependencies map (the topology file changed)."""
        self.gate.set_topology(topology)

    def swap_model(self, model: RiskModel, alerting: AlertingConfig) -> None:
        """Score from the next step on with `model` and its thresholds (`alerting`, resolved).

        Buckets, windows and alert states are kept: the first window scored by the new model
        is the one after the last window the old model scored, and a firing alert stays
        firing (it resolves under the new resolve threshold)."""
        self.model = model
        self.alerts.config = alerting
        if not self._uses_topology():
            self.gate.flush()  # held windows are dropped: the new model scores from the next step

    def drop(self, service: str) -> None:
        """Forget a service's buckets, window and alert state (partition revoked, evicted)."""
        self.bucketer.drop(service)
        self.windows.drop(service)
        self.alerts.drop(service)
        self.gate.drop(service)
        self._drivers_due.pop(service, None)

    def _uses_topology(self) -> bool:
        return (NAME in context_layout(self.model) and bool(self.gate.topology)
                and hasattr(self.model, "prepare"))

    def _advance(self, buckets: list[Bucket]) -> StepResult:
        result = StepResult(buckets=buckets)
        if self._uses_topology():
            self.gate.observe(buckets)  # also the steps that make no window yet
        windows = [w for w in map(self.windows.push, buckets) if w is not None]
        if not windows or self.model is None:
            return result
        stacked = np.stack([w.values for w in windows])
        ok = scorable(stacked, self._feature_columns, self._max_missing)
        result.unscorable = int((~ok).sum())
        kept = [w for w, keep in zip(windows, ok, strict=True) if keep]
        holding, failed = (rule_state(stacked[ok], self.metrics, self.config.failure,
                                      self.config.failure_for_steps) if kept else ([], []))
        if self._uses_topology():
            prepared = self.model.prepare(stacked[ok])  # type: ignore[union-attr]
            self.gate.record(kept, stacked[ok], prepared, self.metrics, self.config.failure)
            released, result.dependency_late = self.gate.admit(
                Held(w, p, bool(h), bool(f))
                for w, p, h, f in zip(kept, prepared, holding, failed, strict=True))
            self._score_held(result, released)
            self.gate.prune()
            return result
        result.batch_size = len(kept)
        if not kept:
            return result
        context = self._context(kept)
        risks = (self.model.score(stacked[ok]) if context is None
                 else self.model.score(stacked[ok], context))
        explain = self._observe(result, kept, risks, holding, failed)
        if explain:
            self._explain(result, kept, stacked[ok], context, risks, explain)
        return result

    def _score_held(self, result: StepResult, held: list[Held]) -> None:
        """Score windows the gate released, with the topology channels, in one call."""
        result.batch_size += len(held)
        if not held:
            return
        layout = context_layout(self.model)
        self.gate.inputs = inputs_of(layout.channels_of(NAME))
        windows = [h.window for h in held]
        expired = self.gate.expired
        context = layout.build(self._batch(windows), {**self.context, NAME: self.gate})
        result.dependency_late += self.gate.expired - expired
        x = with_context(np.stack([h.prepared for h in held]), context)
        risks = self.model.score_prepared(x)  # type: ignore[union-attr]
        start = len(result.transitions)
        explain = self._observe(result, windows, risks, [h.holding for h in held],
                                [h.failed for h in held], [h.late for h in held])
        if explain:
            self._explain(result, windows, np.stack([w.values for w in windows]), context,
                          risks, explain)
        rows = {(w.service, w.ts): i for i, w in enumerate(windows)}
        for k in range(start, len(result.transitions)):
            transition = result.transitions[k]
            if transition.state == "firing" and transition.phase == "predicted":
                i = rows[transition.service, transition.ts]
                cause, without_each = self._cause(windows[i], x[i], float(risks[i]), layout)
                drivers = transition.drivers
                if self.attributor is not None and without_each:
                    drivers = with_dependencies(drivers, float(risks[i]), without_each,
                                                self.attributor.top)
                result.transitions[k] = replace(transition, cause_service=cause,
                                                drivers=drivers)

    def _cause(self, window: Window, x: np.ndarray, risk: float, layout: ContextLayout
               ) -> tuple[str | None, dict[str, float]]:
        """The dependency that drove a firing (`sentinel.core.cause`), and the risk with each
        present dependency left out: the window rescored without any dependency, and
        without each present one in turn."""
        present = self.gate.present(window.service, window.ts)
        if not present:
            return None, {}
        offset = x.shape[-1] - layout.width
        for provider, channels in zip(layout.providers, layout.channels, strict=True):
            if provider == NAME:
                break
            offset += len(channels)
        width = len(layout.channels_of(NAME))
        variants = [(), *(tuple(d for d in present if d != left) for left in present)]
        batch = np.repeat(x[None], len(variants), axis=0)
        for j, deps in enumerate(variants):
            batch[j, :, offset: offset + width] = self.gate.channels_with(window.service,
                                                                          window.ts, deps)
        rest = self.model.score_prepared(batch)  # type: ignore[union-attr]
        without_each = dict(zip(present, map(float, rest[1:]), strict=True))
        return (cause_service(risk, float(rest[0]), without_each,
                              float(self.alerts.config.threshold or 0.5)), without_each)

    def _observe(self, result: StepResult, windows: list[Window], risks: np.ndarray,
                 holding: Iterable[bool], failed: Iterable[bool],
                 late: Iterable[int] | None = None
                 ) -> list[tuple[int, int, ServiceAlertState | None]]:
        """Feed the scores to the alert machine; the windows to explain (attribution): (row,
        its firing's index in result.transitions, None) or (row, -1, the firing episode's
        state) for a due refresh."""
        # buckets come per service in ts order (and the gate releases a service's windows in
        # ts order), so the alert machine sees each service's steps in order
        lates = late if late is not None else (0 for _ in windows)
        due = self._drivers_due
        explain: list[tuple[int, int, ServiceAlertState | None]] = []
        for j, (window, risk, hold, fail, behind) in enumerate(
                zip(windows, risks, holding, failed, lates, strict=False)):
            score = Score(window.service, window.ts, float(risk), behind)
            result.scores.append(score)
            transition = self.alerts.observe(score.service, score.ts, score.risk, bool(hold),
                                             bool(fail))
            if transition is not None:
                result.transitions.append(self._with_planned_event(transition))
                if transition.state == "resolved":
                    due.pop(score.service, None)
                elif self.attributor is not None:
                    explain.append((j, len(result.transitions) - 1, None))
                    due[score.service] = score.ts + self._refresh
            elif due and score.ts >= due.get(score.service, score.ts + 1):
                explain.append((j, -1, self.alerts.states[score.service]))
                due[score.service] = score.ts + self._refresh
        return explain

    def _explain(self, result: StepResult, windows: list[Window], values: np.ndarray,
                 context: np.ndarray | None, risks: np.ndarray,
                 explain: list[tuple[int, int, ServiceAlertState | None]]) -> None:
        """Drivers for this step's firings and due refreshes: one batched model call."""
        assert self.attributor is not None and self.model is not None
        rows = [j for j, _, _ in explain]
        scorer = _PreparedScorer(self.model) if self._uses_topology() else self.model
        drivers = self.attributor.explain(scorer, values[rows], risks[rows],
                                          None if context is None else context[rows])
        for (j, index, state), found in zip(explain, drivers, strict=True):
            if state is None:
                result.transitions[index] = replace(result.transitions[index], drivers=found)
            else:  # the episode may resolve later in this batch: refreshed is in ts order
                assert state.firing_since is not None
                result.refreshed.append(AlertTransition(
                    windows[j].service, "firing", windows[j].ts, float(risks[j]),
                    state.firing_since, state.phase, drivers=found))

    def _batch(self, windows: list[Window]) -> ContextBatch:
        return ContextBatch(tuple(w.service for w in windows),
                            np.array([w.ts for w in windows], np.int64),
                            self.config.step_seconds, self.config.window_steps)

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
        return layout.build(self._batch(windows), self.context)
