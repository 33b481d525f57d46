"""Topology context channels: what a service's dependencies look like, step by step.

    >>> topology = Topology.of({"checkout": ["payment", "inventory"], "cart": ["inventory"]})
    >>> channels = topology_channels(input_names(config, scaler))   # fixed width
    >>> context = aggregate(pool, dep_index, ...)                   # (n, window_steps, width)

A cascade shows first in the dependency that starts it (inventory saturates, then cart and
checkout tip over); the caller's own window shows it only in its last minute or two. So the
model of a caller also sees, per step of its window, over its dependencies' windows ending
at the same step (`sentinel.core.context`, provider "topology"):

- ``dep_max:<input>`` and ``dep_mean:<input>`` for every prepared model input of the
  dependencies (the scaled features and their deviations, already within +-10);
- ``dep_failing_share``: the share of dependencies whose failure rule holds at that step;
- ``dep_max_pressure``: the highest dependency *failure pressure*, how close its metrics are
  to the failure rule (`failure_pressure`, in [0, 1]).

The width depends only on the model's inputs, never on the number of dependencies, so a
topology change does not change the model's input shape. Every channel is 0 when the
service has no dependency, or none of them has a scorable window at that step (a missing
dependency is neutral, never a crash). Every channel comes from the dependencies' *raw*
windows, not from their risk: a dependency's risk would need its own model's score first
(an order between services, and a replica waiting on another replica's scoring), and
training could not compute it without the model being trained. The failure pressure takes
the place of "the dependency's risk": it is known from the data alone, identically in
training, backtest and live.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sentinel.config.schema import FailureRule
from sentinel.core.labels import failing_steps

NAME = "topology"
TOPOLOGY_SUMMARY_CHANNELS = ("dep_failing_share", "dep_max_pressure")


@dataclass(frozen=True)
class Topology:
    """caller -> its dependencies (each listed once, a self-dependency dropped)."""

    edges: tuple[tuple[str, tuple[str, ...]], ...] = ()
    _deps: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False,
                                              compare=False)
    _dependents: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False,
                                                    repr=False, compare=False)

    def __post_init__(self) -> None:
        dependents: dict[str, list[str]] = {}
        for caller, deps in self.edges:
            self._deps[caller] = deps
            for dep in deps:
                dependents.setdefault(dep, []).append(caller)
        self._dependents.update({d: tuple(c) for d, c in dependents.items()})

    @classmethod
    def of(cls, mapping: Mapping[str, Iterable[str]]) -> Topology:
        edges = []
        for caller in sorted(mapping):
            deps = tuple(dict.fromkeys(d for d in mapping[caller] if d != caller))
            if deps:
                edges.append((caller, deps))
        return cls(tuple(edges))

    def merged(self, other: Topology) -> Topology:
        """The union of both maps: a caller's dependencies from either."""
        mapping: dict[str, list[str]] = {c: list(d) for c, d in self.edges}
        for caller, deps in other.edges:
            mapping.setdefault(caller, []).extend(deps)
        return Topology.of(mapping)

    def __bool__(self) -> bool:
        return bool(self.edges)

    def dependencies(self, service: str) -> tuple[str, ...]:
        return self._deps.get(service, ())

    def dependents(self, service: str) -> tuple[str, ...]:
        """The callers that depend on `service`."""
        return self._dependents.get(service, ())

    def is_dependency(self, service: str) -> bool:
        return service in self._dependents

    @property
    def max_dependencies(self) -> int:
        return max((len(d) for _, d in self.edges), default=0)


def topology_problems(mapping: Mapping[str, Iterable[str]]) -> list[str]:
    """Warnings about a raw caller -> dependencies map: self-dependencies (dropped) and
    cycles (kept: every channel comes from raw windows, so a cycle cannot deadlock)."""
    problems = [f"{caller!r} lists itself as a dependency (ignored)"
                for caller, deps in sorted(mapping.items()) if caller in deps]
    graph = {c: [d for d in deps if d != c] for c, deps in mapping.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        stack: list[tuple[str, Iterable[str]]] = [(root, iter(graph.get(root, ())))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)  # type: ignore[call-overload]
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                cycle = [*path[path.index(child):], child]
                problems.append("dependency cycle " + " -> ".join(cycle))
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(graph.get(child, ()))))
    return problems


def input_names(feature_names: Sequence[str], deviation: bool) -> tuple[str, ...]:
    """The names of a model's prepared inputs (`Scaler.prepare`'s columns)."""
    names = tuple(feature_names)
    return names + tuple(f"{n}_deviation" for n in names) if deviation else names


def topology_channels(inputs: Sequence[str]) -> tuple[str, ...]:
    """The topology channels of a model whose prepared inputs are named `inputs`."""
    return (tuple(f"dep_max:{n}" for n in inputs) + tuple(f"dep_mean:{n}" for n in inputs)
            + TOPOLOGY_SUMMARY_CHANNELS)


def inputs_of(channels: Sequence[str]) -> tuple[str, ...]:
    """The prepared inputs a model's recorded topology channels were made from."""
    return tuple(c.removeprefix("dep_max:") for c in channels if c.startswith("dep_max:"))


def failure_pressure(values: np.ndarray, metrics: tuple[str, ...], rule: FailureRule
                     ) -> np.ndarray:
    """(..., steps, n_metrics) raw -> (..., steps) in [0, 1]: how close the failure rule is to
    holding. Per condition, value / limit for ``>``/``>=`` (limit / value for ``<``/``<=``;
    whether it holds for ``==``/``!=``), clipped to [0, 1]; conditions combine as the rule
    does (``any``: the highest, ``all``: the lowest). A missing value is 0."""
    parts = []
    for condition in rule.conditions:
        column = values[..., metrics.index(condition.metric)]
        limit = condition.value
        with np.errstate(divide="ignore", invalid="ignore"):
            if condition.op in (">", ">="):
                part = column / limit if limit > 0 else (column >= limit).astype(float)
            elif condition.op in ("<", "<="):
                part = np.where(column <= 0, 1.0, limit / column) if limit > 0 else \
                    (column <= limit).astype(float)
            elif condition.op == "==":
                part = (column == limit).astype(float)
            else:
                part = (column != limit).astype(float)
        parts.append(np.clip(np.nan_to_num(part, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0))
    stacked = np.stack(parts, axis=-1)
    return stacked.max(axis=-1) if rule.mode == "any" else stacked.min(axis=-1)


@dataclass(frozen=True, slots=True, eq=False)
class DependencySteps:
    """Dependency windows, as the topology channels need them: (m, steps, ...)."""

    prepared: np.ndarray  # (m, steps, k) float32: the model's prepared inputs
    failing: np.ndarray  # (m, steps) float32 0/1: the failure rule holds
    pressure: np.ndarray  # (m, steps) float32 in [0, 1]

    @classmethod
    def of(cls, raw: np.ndarray, prepared: np.ndarray, metrics: tuple[str, ...],
           rule: FailureRule) -> DependencySteps:
        """From raw windows (m, steps, n_metrics) and their prepared inputs (m, steps, k)."""
        return cls(np.asarray(prepared, np.float32),
                   failing_steps(raw, metrics, rule).astype(np.float32),
                   failure_pressure(raw, metrics, rule).astype(np.float32))

    @classmethod
    def stack(cls, parts: Sequence[DependencySteps], steps: int, k: int) -> DependencySteps:
        if not parts:
            return cls(np.zeros((0, steps, k), np.float32), np.zeros((0, steps), np.float32),
                       np.zeros((0, steps), np.float32))
        return cls(np.concatenate([p.prepared for p in parts]),
                   np.concatenate([p.failing for p in parts]),
                   np.concatenate([p.pressure for p in parts]))

    def row(self, i: int) -> DependencySteps:
        return DependencySteps(self.prepared[i: i + 1], self.failing[i: i + 1],
                               self.pressure[i: i + 1])


CHUNK = 2048  # callers per gather: bounds the (callers, deps, steps, k) temporary


def aggregate(pool: DependencySteps, index: np.ndarray) -> np.ndarray:
    """The topology channels of n callers: `index` (n, max_deps) holds each caller's
    dependency windows as rows of `pool`, -1 for a missing one (neutral).
    Returns (n, steps, 2k + 2) float32, zeros where a caller has no dependency present."""
    n = len(index)
    _, steps, k = pool.prepared.shape
    out = np.zeros((n, steps, 2 * k + 2), np.float32)
    if n == 0 or index.shape[1] == 0 or len(pool.prepared) == 0:
        return out
    # one row past the pool stands for a missing dependency: -inf never wins a max, and is
    # zeroed before the sum (float32 throughout: a float64 scalar would double the memory)
    extended = np.concatenate([pool.prepared, np.full((1, steps, k), -np.inf, np.float32)])
    failing = np.concatenate([pool.failing, np.zeros((1, steps), np.float32)])
    pressure = np.concatenate([pool.pressure, np.zeros((1, steps), np.float32)])
    for start in range(0, n, CHUNK):
        idx = index[start: start + CHUNK]
        present = idx >= 0
        count = present.sum(axis=1)
        rows = np.where(present, idx, len(pool.prepared))
        gathered = extended[rows]  # (c, d, steps, k)
        block = out[start: start + CHUNK]
        block[:, :, :k] = np.where((count > 0)[:, None, None], gathered.max(axis=1), 0.0)
        np.copyto(gathered, 0.0, where=~present[:, :, None, None])
        denominator = np.maximum(count, 1).astype(np.float32)[:, None]
        block[:, :, k: 2 * k] = gathered.sum(axis=1) / denominator[..., None]
        block[:, :, 2 * k] = failing[rows].sum(axis=1) / denominator
        block[:, :, 2 * k + 1] = pressure[rows].max(axis=1)
    return out


def dependency_channels(topology: Topology, services: Sequence[str], ts: Sequence[int],
                        lookup: Callable[[str, int], DependencySteps | None], steps: int, k: int
                        ) -> np.ndarray:
    """The topology channels (n, steps, 2k + 2) of the windows of `services` ending at `ts`;
    `lookup(dep, ts)` gives a dependency's window ending at ts (one row), None when missing.
    The same function serves the pipeline (kept steps) and training (other series)."""
    parts: list[DependencySteps] = []
    where: dict[tuple[str, int], int] = {}
    width = max((len(topology.dependencies(s)) for s in services), default=0)
    index = np.full((len(services), width), -1, np.int64)
    for i, (service, end) in enumerate(zip(services, ts, strict=True)):
        for j, dep in enumerate(topology.dependencies(service)):
            key = (dep, end)
            row = where.get(key, -2)
            if row == -2:
                found = lookup(dep, end)
                row = where[key] = -1 if found is None else len(parts)
                if found is not None:
                    parts.append(found)
            index[i, j] = row
    return aggregate(DependencySteps.stack(parts, steps, k), index)
