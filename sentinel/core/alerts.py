"""The alert state machine: risk per scored step in, firing/resolved transitions out.

    >>> m = AlertMachine(AlertingConfig(threshold=0.5, for_steps=2), step_seconds=10)
    >>> m.observe("cart", 0, 0.9) is None, m.observe("cart", 10, 0.8).state
    (True, 'firing')

Per service: *fire* when risk >= threshold for `for_steps` consecutive scored steps (default:
30 s worth, at least one step); *resolve* when risk < resolve_threshold for `resolve_steps`
consecutive scored steps (default: 60 s worth, at least one step; the gap
between the two thresholds is the hysteresis); after a resolve, no new firing for
`cooldown_seconds`. Consecutive means adjacent on the step grid: a skipped (unscored) step
restarts the count. Time is the event time of the window, passed in.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

from sentinel.config.schema import AlertingConfig

State = Literal["firing", "resolved"]
Phase = Literal["predicted", "failing"]  # fired on the predicted risk, or on the failure rule


@dataclass(frozen=True, slots=True)
class AlertTransition:
    service: str
    state: State
    ts: int  # event time of the step that caused the transition
    risk: float
    started_ts: int  # event time of the firing that opened the episode
    phase: Phase = "predicted"
    # the dependency that drove a firing's risk (sentinel.core.cause), None when none did
    cause_service: str | None = None
    planned_event: str = ""  # the sale calendar's event in progress at `ts`, if any

    @property
    def episode_key(self) -> str:
        """Stable per alert episode: the idempotency key and fingerprint of its notifications."""
        return hashlib.sha256(f"{self.service}\0{self.started_ts}".encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"service": self.service, "state": self.state, "ts": self.ts,
                                  "risk": round(self.risk, 6), "phase": self.phase}
        if self.cause_service is not None:
            doc["cause_service"] = self.cause_service
        if self.planned_event:
            doc["planned_event"] = self.planned_event
        return doc


class ServiceAlertState(NamedTuple):
    """Immutable like the rest of the vocabulary; a NamedTuple because one is made per scored
    window and a frozen dataclass costs 3x as much to create."""

    firing_since: int | None = None
    streak: int = 0  # consecutive steps beyond the threshold that would change the state
    last_ts: int | None = None
    quiet_until: int = -(2**62)  # cooldown end
    phase: Phase = "predicted"


_INITIAL = ServiceAlertState()


FOR_SECONDS = 30.0  # default for-duration of a firing: 3 steps of 10 s, 1 step of 5 min
RESOLVE_SECONDS = 60.0  # default below-threshold duration of a resolve


def steps_for(configured: int | None, seconds: float, step_seconds: int) -> int:
    """`for_steps`/`resolve_steps` as configured, else the default duration in steps (>= 1)."""
    return configured if configured is not None else max(1, math.ceil(seconds / step_seconds))


class AlertMachine:
    def __init__(self, config: AlertingConfig, step_seconds: int) -> None:
        self.step_seconds = step_seconds
        self.config = config
        self.states: dict[str, ServiceAlertState] = {}
        self._firing: set[str] = set()

    @property
    def config(self) -> AlertingConfig:
        return self._config

    @config.setter
    def config(self, config: AlertingConfig) -> None:
        self._config = config
        self.for_steps = steps_for(config.for_steps, FOR_SECONDS, self.step_seconds)
        self.resolve_steps = steps_for(config.resolve_steps, RESOLVE_SECONDS, self.step_seconds)

    def observe(self, service: str, ts: int, risk: float, holding: bool = False,
                failed: bool = False) -> AlertTransition | None:
        """One scored step. `holding`: the failure rule holds at this step; `failed`: it has
        held for the rule's `for` (the service is failing). A failing service fires at once
        (phase "failing") even if nobody predicted it, and no alert resolves while the rule
        holds: an alert never says "all clear" in the middle of the failure it announced."""
        state = self.states.get(service, _INITIAL)
        if state.last_ts is not None and ts <= state.last_ts:
            return None  # a replayed step after a restart: already accounted for
        adjacent = state.last_ts is not None and ts - state.last_ts == self.step_seconds
        streak = state.streak if adjacent else 0
        firing_since, quiet_until, phase = state.firing_since, state.quiet_until, state.phase
        transition = None
        if firing_since is None:
            armed = risk >= self.config.threshold and ts >= quiet_until
            streak = streak + 1 if armed else 0
            if streak >= self.for_steps or failed:
                phase = "predicted" if streak >= self.for_steps else "failing"
                firing_since, streak = ts, 0
                transition = AlertTransition(service, "firing", ts, risk, ts, phase)
                self._firing.add(service)
        else:
            streak = streak + 1 if risk < self.config.resolve_threshold and not holding else 0
            if streak >= self.resolve_steps:
                transition = AlertTransition(service, "resolved", ts, risk, firing_since, phase)
                firing_since, quiet_until, streak = None, ts + int(self.config.cooldown_seconds), 0
                self._firing.discard(service)
        # one object per step: dataclasses.replace cost more than the rest of this method
        self.states[service] = ServiceAlertState(firing_since, streak, ts, quiet_until, phase)
        return transition

    def firing(self) -> dict[str, int]:
        """Services whose alert is firing, with the event time it started."""
        return {s: self.states[s].firing_since for s in self._firing}  # type: ignore[misc]

    def firing_count(self) -> int:
        """len(firing()) without a pass over every service."""
        return len(self._firing)

    def drop(self, service: str) -> None:
        self.states.pop(service, None)
        self._firing.discard(service)
