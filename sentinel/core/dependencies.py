"""The pipeline's topology provider: dependency steps kept by event time, callers held until
their dependencies closed the same step (a bounded wait).

    >>> gate = DependencyGate(topology, step_seconds=10, window_steps=30, wait_seconds=20)
    >>> gate.observe(buckets); gate.record(windows, raw, prepared, metrics, rule)
    >>> released, late = gate.admit(held)       # score `released` with gate.build(batch)

The rule for a caller's window ending at step t (event time, never the wall clock):

- it is scored as soon as every dependency it *waits on* has closed step t; it waits on a
  dependency that closed a step within the last window before t (one never seen is simply
  missing; one silent for a whole window is not waited for);
- else it is held, and released when the caller itself has closed the step
  t + `wait_seconds` (its own event time moved on that far);
- every dependency seen that has not closed step t when the window is scored is neutral for
  that window and counted as *late* (the daemon's ``sentinel_dependency_late_total``), also
  one silent for a whole window: it is missing, and the count says so;
- a caller's windows are released in step order, so its alerts see its steps in order.

Each dependency's steps are kept for `retention_steps` of its own newest step; a caller more
than that behind its dependency finds the step gone and scores it neutral (counted late, as
`expired`).

Several replicas: a dependency may be consumed by another replica. With `publish` on, the
gate keeps what it closed and recorded of its dependencies for `take_outgoing()` (the
daemon publishes it to the steps topic); `receive()` takes another replica's closed steps
and windows, which then count exactly like local ones (same wait, same late rule).
Replaying a file (backtest) closes the steps of all services of a 10 s step within one chunk
of messages, so nothing waits there; live, a dependency whose samples arrive up to
`wait_seconds` later than its caller's still gives the same scores as the backtest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sentinel.config.schema import FailureRule
from sentinel.core.buckets import Bucket
from sentinel.core.context import ContextBatch
from sentinel.core.topology import (
    NAME,
    DependencySteps,
    Topology,
    dependency_channels,
    topology_channels,
)
from sentinel.core.windows import Window

RETENTION_EXTRA_STEPS = 3  # a dependency's steps kept beyond the wait


@dataclass(slots=True, eq=False)
class Held:
    """A caller's scorable window waiting for its dependencies."""

    window: Window
    prepared: np.ndarray  # (window_steps, k) float32: the model's prepared own inputs
    holding: bool  # the failure rule holds at its last step
    failed: bool  # ... and has held for `for`
    late: int = 0  # dependencies that had not closed the step when it was released


class DependencyGate:
    name = NAME

    def __init__(self, topology: Topology, step_seconds: int, window_steps: int,
                 wait_seconds: float, inputs: tuple[str, ...] = ()) -> None:
        self.topology = topology
        self.step_seconds = step_seconds
        self.window_steps = window_steps
        self.wait_seconds = wait_seconds
        self.inputs = inputs
        self.retention_steps = int(wait_seconds // step_seconds) + RETENTION_EXTRA_STEPS
        self._closed: dict[str, int] = {}  # dependency -> its newest closed step
        self._steps: dict[str, dict[int, DependencySteps]] = {}  # dependency -> ts -> its window
        self._held: dict[str, deque[Held]] = {}
        self._recorded: set[str] = set()  # dependencies recorded since the last prune
        self._pruned_before: dict[str, int] = {}
        self.expired = 0  # dependency steps asked for after they were pruned (a lagging caller)
        self.publish = False  # keep local dependency steps for `take_outgoing` (several replicas)
        self._outgoing: dict[tuple[str, int], DependencySteps | None] = {}
        self.newest_remote = -1 << 62  # newest step received from another replica
        self.newest_local = -1 << 62  # newest step closed here (any service)

    def channels(self) -> tuple[str, ...]:
        return topology_channels(self.inputs)

    @property
    def held(self) -> int:
        return sum(map(len, self._held.values()))

    def set_topology(self, topology: Topology) -> None:
        """A new topology (file reloaded): steps of services no longer depended on are dropped."""
        self.topology = topology
        for service in [s for s in self._steps if not topology.is_dependency(s)]:
            del self._steps[service]
            self._closed.pop(service, None)

    def observe(self, buckets: Iterable[Bucket]) -> None:
        """Closed buckets of this poll (before `record`): which steps each dependency closed,
        including steps that made no scorable window."""
        for bucket in buckets:
            self.newest_local = max(self.newest_local, bucket.ts)
            if (self.topology.is_dependency(bucket.service)
                    and bucket.ts > self._closed.get(bucket.service, -1 << 62)):
                self._closed[bucket.service] = bucket.ts
            if self.publish and self.topology.is_dependency(bucket.service):
                self._outgoing.setdefault((bucket.service, bucket.ts), None)

    def record(self, windows: list[Window], raw: np.ndarray, prepared: np.ndarray,
               metrics: tuple[str, ...], rule: FailureRule) -> None:
        """Keep the scorable windows (raw (n, steps, m), prepared (n, steps, k)) of services
        that others depend on, for the callers' channels."""
        rows = [i for i, w in enumerate(windows) if self.topology.is_dependency(w.service)]
        if not rows:
            return
        steps = DependencySteps.of(raw[rows], prepared[rows], metrics, rule)
        for j, i in enumerate(rows):
            window = windows[i]
            self._steps.setdefault(window.service, {})[window.ts] = steps.row(j)
            self._recorded.add(window.service)
            if self.publish:
                self._outgoing[window.service, window.ts] = steps.row(j)

    def take_outgoing(self) -> list[tuple[str, int, DependencySteps | None]]:
        """The dependency steps closed here since the last call, in step order: (service,
        step, its window's steps or None when the step made no scorable window)."""
        out = sorted(((s, ts, steps) for (s, ts), steps in self._outgoing.items()),
                     key=lambda item: item[1])
        self._outgoing.clear()
        return out

    def receive(self, service: str, ts: int, steps: DependencySteps | None) -> None:
        """Another replica closed `service`'s step `ts` (with its window's steps, if scorable).
        Idempotent: receiving a step twice, or one this gate closed itself, changes nothing."""
        if not self.topology.is_dependency(service):
            return
        if ts > self._closed.get(service, -1 << 62):
            self._closed[service] = ts
        self.newest_remote = max(self.newest_remote, ts)
        if steps is not None and ts >= self._pruned_before.get(service, -1 << 62):
            self._steps.setdefault(service, {})[ts] = steps
            self._recorded.add(service)

    def prune(self) -> None:
        """Forget dependency steps older than `retention_steps` before the dependency's newest
        one; called after the poll's windows were scored."""
        for service in self._recorded:
            kept = self._steps.get(service)
            if not kept:
                continue
            oldest = max(kept) - self.retention_steps * self.step_seconds
            for ts in [ts for ts in kept if ts < oldest]:
                del kept[ts]
            self._pruned_before[service] = oldest
        self._recorded.clear()

    def admit(self, items: Iterable[Held]) -> tuple[list[Held], int]:
        """Hold the new windows behind any older held one of their service; release what is
        ready or past the wait. Returns the released windows (each service's in step order)
        and the number of (window, dependency) pairs scored without the dependency (late)."""
        for item in items:
            self._held.setdefault(item.window.service, deque()).append(item)
        released: list[Held] = []
        late = 0
        for service in list(self._held):
            queue = self._held[service]
            deps = self.topology.dependencies(service)
            while queue:
                head = queue[0]
                waiting, behind = self._behind(deps, head.window.ts)
                if waiting and queue[-1].window.ts - head.window.ts < self.wait_seconds:
                    break
                late += behind
                head.late = behind
                released.append(queue.popleft())
            if not queue:
                del self._held[service]
        return released, late

    def flush(self) -> tuple[list[Held], int]:
        """Release every held window (the end of a replayed file)."""
        released = [item for queue in self._held.values() for item in queue]
        for item in released:
            item.late = self._behind(self.topology.dependencies(item.window.service),
                                     item.window.ts)[1]
        self._held.clear()
        return released, sum(item.late for item in released)

    def drop(self, service: str) -> None:
        self._held.pop(service, None)
        self._steps.pop(service, None)
        self._closed.pop(service, None)
        self._pruned_before.pop(service, None)

    def _behind(self, deps: tuple[str, ...], ts: int) -> tuple[int, int]:
        """Of the dependencies seen that have not closed step `ts`: how many the window waits
        on (they closed a step within the last window), and how many in all (late)."""
        since = ts - self.window_steps * self.step_seconds
        waiting = behind = 0
        for dep in deps:
            closed = self._closed.get(dep)
            if closed is not None and closed < ts:
                behind += 1
                waiting += closed >= since
        return waiting, behind

    def build(self, batch: ContextBatch) -> np.ndarray:
        """The topology channels of `batch` from the kept dependency steps."""
        def lookup(dep: str, ts: int) -> DependencySteps | None:
            found = self._steps.get(dep, {}).get(ts)
            if found is None and ts < self._pruned_before.get(dep, -1 << 62):
                self.expired += 1
            return found

        return dependency_channels(self.topology, batch.services, batch.ts.tolist(), lookup,
                                   batch.window_steps, len(self.inputs))

    def present(self, service: str, ts: int) -> tuple[str, ...]:
        """The dependencies of `service` with a kept window ending at `ts`."""
        return tuple(d for d in self.topology.dependencies(service)
                     if ts in self._steps.get(d, {}))

    def channels_with(self, service: str, ts: int, deps: tuple[str, ...]) -> np.ndarray:
        """(window_steps, width) channels of one window as if `deps` were its only
        dependencies (leaving some out: `sentinel.core.cause`)."""
        topology = Topology(((service, deps),)) if deps else Topology()
        return dependency_channels(topology, (service,), (ts,),
                                   lambda dep, end: self._steps.get(dep, {}).get(end),
                                   self.window_steps, len(self.inputs))[0]

    def pressure(self, dep: str, ts: int) -> float | None:
        """A dependency's failure pressure at step `ts` (its window ending there), if kept."""
        steps = self._steps.get(dep, {}).get(ts)
        return None if steps is None else float(steps.pressure[0, -1])
