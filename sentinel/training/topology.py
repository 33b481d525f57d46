"""Topology channels for training: each dependency's window from its own series in the same
data (one process reads every service's history), through the same functions the pipeline
uses live (`sentinel.core.topology.dependency_channels`), so training == backtest == live.
"""

from __future__ import annotations

import numpy as np

from sentinel.config.schema import Config
from sentinel.core.context import ContextBatch
from sentinel.core.features import Scaler, tracked_metrics
from sentinel.core.topology import (
    NAME,
    DependencySteps,
    Topology,
    dependency_channels,
    input_names,
    topology_channels,
)
from sentinel.core.windows import max_missing_steps, scorable
from sentinel.training.history import Labelled, Series

CHUNK = 20_000  # windows per gather: bounds the dependency windows held at once


class SeriesTopology:
    """The "topology" context provider of training and of the quality harness."""

    name = NAME

    def __init__(self, topology: Topology, labelled: list[Labelled], config: Config,
                 scaler: Scaler) -> None:
        self.topology = topology
        self.config = config
        self.scaler = scaler
        self.metrics = tracked_metrics(config)
        self.inputs = input_names(config.feature_names, scaler.deviation)
        self._series = {item.series.service: item.series for item in labelled}
        self._max_missing = max_missing_steps(config.window_steps,
                                              config.stream.max_missing_fraction)

    def channels(self) -> tuple[str, ...]:
        return topology_channels(self.inputs)

    def build(self, batch: ContextBatch) -> np.ndarray:
        parts = [self._build(batch.services[i: i + CHUNK], batch.ts[i: i + CHUNK])
                 for i in range(0, len(batch), CHUNK)]
        if not parts:
            return np.zeros((0, batch.window_steps, len(self.channels())), np.float32)
        return np.concatenate(parts)

    def _build(self, services: tuple[str, ...], ts: np.ndarray) -> np.ndarray:
        w = self.config.window_steps
        wanted: dict[str, set[int]] = {}
        for service, end in zip(services, ts.tolist(), strict=True):
            for dep in self.topology.dependencies(service):
                wanted.setdefault(dep, set()).add(end)
        found: dict[tuple[str, int], DependencySteps] = {}
        for dep, ends in wanted.items():
            series = self._series.get(dep)
            if series is not None:
                found.update(self._windows(series, np.array(sorted(ends), np.int64)))
        return dependency_channels(self.topology, services, ts.tolist(),
                                   lambda dep, end: found.get((dep, end)), w, len(self.inputs))

    def _windows(self, series: Series, ends: np.ndarray) -> dict[tuple[str, int], DependencySteps]:
        """The dependency's scorable windows ending at `ends` (steps it has, full windows)."""
        w, step = self.config.window_steps, self.config.step_seconds
        series_ts = series.ts
        rows = np.searchsorted(series_ts, ends)
        inside = rows < len(series_ts)
        ok = inside.copy()
        ok[inside] = series_ts[rows[inside]] == ends[inside]
        ok &= rows >= w - 1
        rows, ends = rows[ok], ends[ok]
        contiguous = series_ts[rows] - series_ts[rows - (w - 1)] == (w - 1) * step
        rows, ends = rows[contiguous], ends[contiguous]
        if not len(rows):
            return {}
        raw = np.stack([series.values[r - w + 1: r + 1] for r in rows.tolist()])
        keep = scorable(raw, np.arange(len(self.config.features)), self._max_missing)
        raw, ends = raw[keep], ends[keep]
        if not len(raw):
            return {}
        steps = DependencySteps.of(raw, self.scaler.prepare(raw, self.config.features),
                                   self.metrics, self.config.failure)
        return {(series.service, int(end)): steps.row(i) for i, end in enumerate(ends.tolist())}
