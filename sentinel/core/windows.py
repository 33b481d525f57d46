"""Rolling windows: the last `window_steps` closed buckets of each service.

The scoring rule for gaps: a step is *missing* when any model feature is missing in it. A
window is scored only when it is full (the service has produced `window_steps` closed
buckets) and at most ``floor(max_missing_fraction * window_steps)`` of its steps are
missing; the missing values of a scored window are filled from the previous step (see
`sentinel.core.features`). Windows with more gaps produce no risk at all, rather than a risk
made up from stale values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sentinel.core.buckets import Bucket


@dataclass(frozen=True, slots=True, eq=False)
class Window:
    service: str
    ts: int  # start of the window's last step; the window covers (ts - window, ts + step]
    values: np.ndarray  # (window_steps, n_metrics) float64, NaN = missing


def max_missing_steps(window_steps: int, max_missing_fraction: float) -> int:
    return int(np.floor(max_missing_fraction * window_steps + 1e-9))


def scorable(values: np.ndarray, feature_columns: np.ndarray, max_missing: int) -> np.ndarray:
    """Which windows may be scored; `values` is (..., window_steps, n_metrics)."""
    missing_steps = np.isnan(values[..., feature_columns]).any(axis=-1).sum(axis=-1)
    return missing_steps <= max_missing


class WindowStore:
    """Per-service ring of recent buckets; `push` returns the window ending at the bucket."""

    def __init__(self, n_metrics: int, window_steps: int) -> None:
        self.n_metrics = n_metrics
        self.window_steps = window_steps
        self._values: dict[str, np.ndarray] = {}
        self._filled: dict[str, int] = {}

    def push(self, bucket: Bucket) -> Window | None:
        """Append a closed bucket; the full window ending at it, or None while filling up."""
        values = self._values.get(bucket.service)
        if values is None:
            values = self._values[bucket.service] = np.full(
                (self.window_steps, self.n_metrics), np.nan)
            self._filled[bucket.service] = 0
        values[:-1] = values[1:]
        values[-1] = bucket.values
        filled = self._filled[bucket.service] = min(self._filled[bucket.service] + 1,
                                                     self.window_steps)
        if filled < self.window_steps:
            return None
        return Window(bucket.service, bucket.ts, values.copy())

    def drop(self, service: str) -> None:
        self._values.pop(service, None)
        self._filled.pop(service, None)

    def __contains__(self, service: str) -> bool:
        return service in self._values
