"""Training data: labelled series cut into the windows the model learns from.

Shared by training and the static baseline (which reads the same windows), so neither
imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sentinel.config.calendar_file import read_calendar
from sentinel.config.schema import Config
from sentinel.core.calendar import CalendarProvider
from sentinel.core.context import ContextBatch, ContextProvider
from sentinel.core.features import tracked_metrics
from sentinel.core.windows import max_missing_steps, scorable
from sentinel.errors import DataError
from sentinel.training.history import Labelled, window_view


@dataclass(frozen=True, eq=False)
class WindowSet:
    """Scorable windows of all services, as indices into their series; `y` is NaN for the
    windows inside a failure (scored and replayed, never trained on)."""

    labelled: list[Labelled]
    series_index: np.ndarray  # which labelled series
    step_index: np.ndarray  # the window's last step in that series
    ts: np.ndarray
    y: np.ndarray
    known: np.ndarray  # the window's failure state is known (see `sentinel.training.history.label`)
    judged: np.ndarray | None = None  # an operator's verdict relabelled the window (feedback)

    def raw(self, config: Config, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), config.window_steps, len(tracked_metrics(config))))
        for i, row in enumerate(rows):
            values = self.labelled[self.series_index[row]].series.values
            end = self.step_index[row] + 1
            out[i] = values[end - config.window_steps: end]
        return out

    def batch(self, config: Config, rows: np.ndarray) -> ContextBatch:
        """The rows as context providers see them (`sentinel.core.context`)."""
        return ContextBatch(tuple(self.labelled[k].series.service for k in self.series_index[rows]),
                            self.ts[rows].astype(np.int64), config.step_seconds,
                            config.window_steps)


def offline_context(config: Config) -> dict[str, ContextProvider]:
    """The context providers the config sets up, as training and backtests use them (fixed
    for the run): the sale calendar's file (`calendar.file`) when there is one."""
    providers: dict[str, ContextProvider] = {}
    if config.calendar.file is not None:
        providers["calendar"] = CalendarProvider(read_calendar(config.calendar.file))
    return providers


def labelled_windows(labelled: list[Labelled], config: Config) -> WindowSet:
    w = config.window_steps
    max_missing = max_missing_steps(w, config.stream.max_missing_fraction)
    feature_columns = np.arange(len(config.features))
    parts: list[tuple[np.ndarray, ...]] = []
    for k, item in enumerate(labelled):
        views = window_view(item.series.values, w)
        if not len(views):
            continue
        steps = np.arange(w - 1, len(item.series.values))
        y = item.y[steps]
        keep = scorable(views, feature_columns, max_missing)
        steps = steps[keep]
        ts = item.series.ts[steps]
        judged = (item.feedback[steps] if item.feedback is not None
                  else np.zeros(len(steps), dtype=bool))
        parts.append((np.full(len(steps), k), steps, ts, y[keep],
                      (steps >= item.labelled_from) | judged, judged))
    if not parts:
        raise DataError(f"no scorable window of {w} steps in the history")
    columns = [np.concatenate(c) for c in zip(*parts, strict=True)]
    return WindowSet(labelled, *columns)
