"""Why a service fires: occlusion attribution on the serving model, at firing time.

    >>> attributor = Attributor(("qps", "p99_ms"), step_seconds=10, top=3)
    >>> attributor.explain(model, windows, risks)[0][0].text
    "p99_ms: 4.1 sd above this service's normal, rising for 3 min"

For each window to explain and each model feature, the window is re-scored with that
feature's column replaced by the service's *normal* value: the median of the feature over
the window itself (all steps). A metric's contribution is the risk the model loses when the
metric looks normal: `risk - risk(occluded)`. The windows of every firing explained at one
step go to the model in one batched call: F occluded windows per firing (F features; the
unoccluded risk is the one just scored), so the cost is bounded by the firing services,
never by the number of services tracked.

"What it did" is told against the same normal: the last step's distance from the median in
robust standard deviations (1.4826 x the median absolute deviation; the window's standard
deviation when that is 0), and for how long the metric has been more than `AWAY_SD` away
on that side, rising or falling.

Pure (no I/O, no clock): the daemon and the backtest call it from the same pipeline, so
they produce the same drivers for the same stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

AWAY_SD = 2.0  # beyond this many robust sd from the window's median, a metric is "away"
Z_CAP = 99.0  # |z| shown at most this (a metric constant until now has no spread)
MIN_CONTRIBUTION = 1e-3  # a metric whose occlusion lowers the risk less than this is no driver


class Scorer(Protocol):
    def score(self, windows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Driver:
    """One metric behind a risk: how much risk it carries and what it did; or, with
    `service`, one dependency of a topology model (`dependency_driver`)."""

    metric: str
    contribution: float  # risk drop when the metric is replaced by the service's normal value
    z: float  # last step minus normal, in robust sd (capped at +-Z_CAP)
    away_seconds: int  # how long it has been beyond AWAY_SD on the side of `z`
    trend: str  # "rising" | "falling" | "steady" over that time (or the last 3 steps)
    service: str | None = None  # a dependency: the risk drop when its steps are left out

    @property
    def text(self) -> str:
        if self.service is not None:
            return (f"dependency {self.service}: without its steps the risk falls by "
                    f"{self.contribution:.2g}")
        side = "above" if self.z >= 0 else "below"
        size = f"{abs(self.z):.1f}" if abs(self.z) < Z_CAP else f"more than {Z_CAP:.0f}"
        if self.away_seconds == 0:
            return f"{self.metric}: near this service's normal ({size} sd {side})"
        return (f"{self.metric}: {size} sd {side} this service's normal, {self.trend} for "
                f"{duration_words(self.away_seconds)}")

    def to_json(self) -> dict[str, object]:
        return {"metric": self.metric, "contribution": round(self.contribution, 4),
                "z": round(self.z, 2), "away_seconds": self.away_seconds, "trend": self.trend,
                "text": self.text, **({"service": self.service} if self.service else {})}

    @classmethod
    def from_json(cls, raw: object) -> Driver:
        """Raises ValueError on anything `to_json` did not write."""
        if not isinstance(raw, dict):
            raise ValueError(f"a driver must be an object, got {raw!r}")
        metric, trend = raw.get("metric"), raw.get("trend")
        numbers = [raw.get(k) for k in ("contribution", "z", "away_seconds")]
        if (not isinstance(metric, str) or trend not in ("rising", "falling", "steady")
                or not all(isinstance(n, int | float) and not isinstance(n, bool)
                           and math.isfinite(n) for n in numbers)):
            raise ValueError(f"not a driver (metric, contribution, z, away_seconds, trend): {raw!r}")
        service = raw.get("service")
        if service is not None and not isinstance(service, str):
            raise ValueError(f"not a driver (service {service!r}): {raw!r}")
        contribution, z, away = numbers
        return cls(metric, float(contribution), float(z), int(away), str(trend),  # type: ignore[arg-type]
                   service)


def dependency_driver(service: str, contribution: float) -> Driver:
    """A topology model's dependency as a driver: `contribution` is the risk lost when that
    dependency's steps are left out (its channels as if it were missing)."""
    return Driver("dependency", contribution, 0.0, 0, "steady", service)


def with_dependencies(drivers: tuple[Driver, ...], risk: float,
                      without_each: dict[str, float], top: int) -> tuple[Driver, ...]:
    """The metric drivers and the dependencies that carry risk, largest first, at most `top`."""
    found = [*drivers, *(dependency_driver(name, risk - rest)
                         for name, rest in without_each.items()
                         if risk - rest >= MIN_CONTRIBUTION)]
    return tuple(sorted(found, key=lambda d: -d.contribution)[:top])


def duration_words(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def normal_values(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, steps, F) windows -> (median, robust sd), each (k, F); NaN steps ignored, NaN for a
    feature missing in the whole window."""
    empty = np.isnan(windows).all(axis=1)
    if empty.any():  # nanmedian warns on an all-NaN slice: compute on zeros, then blank them
        windows = np.where(empty[:, None, :], 0.0, windows)
    with np.errstate(all="ignore"):
        median = np.nanmedian(windows, axis=1)
        mad = 1.4826 * np.nanmedian(np.abs(windows - median[:, None, :]), axis=1)
        sd = np.nanstd(windows, axis=1)
    scale = np.where(mad > 0, mad, np.where(sd > 0, sd, np.nan))
    return np.where(empty, np.nan, median), np.where(empty, np.nan, scale)


def occluded(windows: np.ndarray, n_features: int, median: np.ndarray) -> np.ndarray:
    """(k, steps, m) -> (k * F, steps, m): window i with feature j at its normal value is row
    i * F + j. A feature missing in the whole window stays missing."""
    k = len(windows)
    out = np.repeat(windows, n_features, axis=0).reshape(k, n_features, *windows.shape[1:])
    for j in range(n_features):
        out[:, j, :, j] = median[:, j, None]
    return out.reshape(k * n_features, *windows.shape[1:])


class Attributor:
    def __init__(self, feature_names: Sequence[str], step_seconds: int, top: int) -> None:
        self.names = tuple(feature_names)
        self.step_seconds = step_seconds
        self.top = top

    def explain(self, model: Scorer, windows: np.ndarray, risks: np.ndarray,
                context: np.ndarray | None = None) -> list[tuple[Driver, ...]]:
        """The top drivers of each window (k, steps, n_metrics) scored `risks` (with its
        context channels, `sentinel.core.context`, kept as they were): one model call."""
        contributions = self.contributions(model, windows, risks, context)
        return self.drivers(windows, contributions)

    def contributions(self, model: Scorer, windows: np.ndarray, risks: np.ndarray,
                      context: np.ndarray | None = None) -> np.ndarray:
        """(k, F) risk drop per feature, from one batched call of k * F windows."""
        k, f = len(windows), len(self.names)
        if k == 0:
            return np.zeros((0, f))
        median, _ = normal_values(windows[..., :f])
        rows = occluded(windows, f, median)
        scored = (model.score(rows) if context is None
                  else model.score(rows, np.repeat(context, f, axis=0)))
        rescored = np.asarray(scored, dtype=np.float64)
        return np.asarray(risks, dtype=np.float64)[:, None] - rescored.reshape(k, f)

    def drivers(self, windows: np.ndarray, contributions: np.ndarray) -> list[tuple[Driver, ...]]:
        f = len(self.names)
        values = windows[..., :f]
        median, scale = normal_values(values)
        out = []
        for i in range(len(windows)):
            order = np.argsort(-contributions[i], kind="stable")[: self.top]
            out.append(tuple(self.describe(values[i, :, j], median[i, j], scale[i, j],
                                           self.names[j], float(contributions[i, j]))
                             for j in order if contributions[i, j] >= MIN_CONTRIBUTION))
        return out

    def describe(self, column: np.ndarray, median: float, scale: float, metric: str,
                 contribution: float) -> Driver:
        """What one metric did over its window, against its normal (median, robust sd)."""
        valid = column[~np.isnan(column)]
        if len(valid) == 0 or not np.isfinite(median):
            return Driver(metric, contribution, 0.0, 0, "steady")
        if not np.isfinite(scale):  # constant over the window
            return Driver(metric, contribution, 0.0, 0, "steady")
        z = (valid - median) / scale
        last = float(np.clip(z[-1], -Z_CAP, Z_CAP))
        side = 1.0 if last >= 0 else -1.0
        away = side * z >= AWAY_SD
        run = len(away) - int(np.flatnonzero(~away)[-1]) - 1 if (~away).any() else len(away)
        span = valid[-max(run, 3):]
        delta = float(span[-1] - span[0])
        trend = "steady" if abs(delta) < 0.5 * scale else ("rising" if delta > 0 else "falling")
        return Driver(metric, contribution, last, run * self.step_seconds, trend)

