"""Event-time buckets: samples aligned to the step grid, closed by a per-service watermark.

    >>> b = Bucketer(("qps",), step_seconds=10, allowed_lateness_seconds=20)
    >>> b.add(Sample("cart", 1000.0, {"qps": 1.0}))
    'accepted'
    >>> b.add(Sample("cart", 1031.0, {"qps": 2.0})); [x.ts for x in b.close_ready()]
    'accepted'
    [1000]

A bucket ``[t, t + step)`` closes once the service's watermark (the largest event time seen
for it, minus the allowed lateness) passes ``t + step``; a sample for a closed bucket is
*late*: counted by the caller, never scored. Closed buckets of a service are contiguous on
the grid: a step with no sample is emitted as an explicit gap (all values NaN), so windows
stay aligned. Several samples in one bucket merge deterministically, whatever their arrival
order: per metric, the value of the sample with the latest ts wins (ties: the larger value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sentinel.core.samples import Sample

AddOutcome = Literal["accepted", "late"]


@dataclass(frozen=True, slots=True, eq=False)
class Bucket:
    service: str
    ts: int  # start of the step, on the grid
    values: np.ndarray  # float64, one per tracked metric, NaN = missing
    n_samples: int

    @property
    def is_gap(self) -> bool:
        return self.n_samples == 0


@dataclass(slots=True)
class _Open:
    # row 0: the values; row 1: the ts of the sample each value came from (merge rule).
    # One array, not two: a service keeps (allowed lateness / step) + 1 of these open.
    cells: np.ndarray
    n_samples: int = 0


@dataclass(slots=True)
class _Service:
    order: int  # when the service was first seen: close_ready's output order
    max_ts: float = -math.inf
    next_ts: int | None = None  # the oldest bucket not yet closed
    open: dict[int, _Open] = field(default_factory=dict)


class Bucketer:
    def __init__(self, metrics: tuple[str, ...], step_seconds: int,
                 allowed_lateness_seconds: float, max_gap_steps: int = 360) -> None:
        self.metrics = metrics
        self.step_seconds = step_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        # After a longer silence the gap is not replayed step by step: the windows are
        # empty by then anyway, and a service down for a week must not emit 60,000 buckets.
        self.max_gap_steps = max_gap_steps
        self._index = {name: i for i, name in enumerate(metrics)}
        self._services: dict[str, _Service] = {}
        self._created = 0
        # Services whose watermark moved since the last close_ready: only they can have a
        # bucket to close (an accepted sample's bucket ends after the watermark), so a poll
        # costs what it touched, not the number of services tracked.
        self._advanced: dict[str, _Service] = {}

    def align(self, ts: float) -> int:
        return int(ts // self.step_seconds) * self.step_seconds

    def add(self, sample: Sample) -> AddOutcome:
        state = self._services.get(sample.service)
        if state is None:
            state = self._services[sample.service] = _Service(self._created)
            self._created += 1
        bucket_ts = self.align(sample.ts)
        # Late is judged against the watermark, not against what close_ready() happened to
        # close already, so the outcome does not depend on how the stream was cut into polls.
        watermark = state.max_ts - self.allowed_lateness_seconds
        if bucket_ts + self.step_seconds <= watermark or (
                state.next_ts is not None and bucket_ts < state.next_ts):
            return "late"
        bucket = state.open.get(bucket_ts)
        if bucket is None:
            n = len(self.metrics)
            bucket = state.open[bucket_ts] = _Open(np.array([[np.nan] * n, [-np.inf] * n]))
        bucket.n_samples += 1
        for name, value in sample.metrics.items():
            i = self._index.get(name)
            if i is None:
                continue
            cells = bucket.cells
            old_ts = cells[1, i]
            if sample.ts > old_ts or (sample.ts == old_ts and value > cells[0, i]):
                cells[0, i], cells[1, i] = value, sample.ts
        if sample.ts > state.max_ts:
            state.max_ts = sample.ts
            self._advanced[sample.service] = state
        return "accepted"

    def lateness_seconds(self, sample: Sample) -> float:
        """How far behind the closed edge a late sample's bucket is (for the late metric)."""
        state = self._services.get(sample.service)
        if state is None:
            return 0.0
        return max(0.0, state.max_ts - self.allowed_lateness_seconds
                   - (self.align(sample.ts) + self.step_seconds))

    def close_ready(self) -> list[Bucket]:
        """Buckets whose end has passed their service's watermark, per service in ts order."""
        closed: list[Bucket] = []
        advanced = sorted(self._advanced.items(), key=lambda item: item[1].order)
        self._advanced.clear()
        for service, state in advanced:
            watermark = state.max_ts - self.allowed_lateness_seconds
            closed.extend(self._close(service, state, until=watermark))
        return closed

    def flush(self) -> list[Bucket]:
        """Close every open bucket (end of a replay, or shutdown)."""
        closed: list[Bucket] = []
        self._advanced.clear()
        for service, state in self._services.items():
            closed.extend(self._close(service, state, until=math.inf))
        return closed

    def drop(self, service: str) -> None:
        """Forget a service (partition revoked, or evicted as idle)."""
        self._services.pop(service, None)
        self._advanced.pop(service, None)

    @property
    def services(self) -> list[str]:
        return list(self._services)

    def _close(self, service: str, state: _Service, until: float) -> list[Bucket]:
        closed: list[Bucket] = []
        nan = np.full(len(self.metrics), np.nan)
        while state.open:
            # The grid start and any jump over a long silence are decided here, per bucket,
            # and kept only once that bucket closes: deciding earlier would make samples that
            # are within the allowed lateness "late" (and cap only the first silence seen).
            first_open = min(state.open)
            next_ts = first_open if state.next_ts is None else state.next_ts
            next_ts = max(next_ts, first_open - self.max_gap_steps * self.step_seconds)
            if next_ts + self.step_seconds > until:
                break
            state.next_ts = next_ts
            bucket = state.open.pop(state.next_ts, None)
            if bucket is None:
                closed.append(Bucket(service, state.next_ts, nan.copy(), 0))
            else:
                closed.append(Bucket(service, state.next_ts, bucket.cells[0], bucket.n_samples))
            state.next_ts += self.step_seconds
        return closed
