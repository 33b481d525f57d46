"""History as per-service series on the step grid, read from JSONL through the same decode and
bucketing code the daemon uses.

    >>> series, stats = read_series(["train.jsonl"], config)
    >>> series["checkout"].values.shape      # (steps, len(tracked_metrics(config)))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sentinel.config.schema import Config
from sentinel.core.buckets import Bucket, Bucketer
from sentinel.core.features import tracked_metrics
from sentinel.core.labels import FailureEvent, failing_steps, failure_events, failure_runs, targets
from sentinel.core.samples import Rejection, Sample, decode
from sentinel.errors import DataError


@dataclass(frozen=True, eq=False)
class Series:
    service: str
    first_ts: int
    step_seconds: int
    values: np.ndarray  # (steps, n_metrics), NaN = missing

    @property
    def ts(self) -> np.ndarray:
        return self.first_ts + self.step_seconds * np.arange(len(self.values))

    @property
    def last_ts(self) -> int:
        return self.first_ts + self.step_seconds * (len(self.values) - 1)


@dataclass
class DecodeStats:
    samples: int = 0
    late: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, object]:
        return {"samples": self.samples, "late": self.late, "rejected": dict(self.rejected)}


def decode_lines(lines: Iterable[str], stats: DecodeStats, until_ts: float | None = None
                 ) -> Iterator[Sample]:
    """Samples of the lines (rejections counted); with `until_ts`, only those before it."""
    for line in lines:
        decoded = decode(line)
        if isinstance(decoded, Rejection):
            stats.rejected[decoded.reason] += 1
        elif until_ts is not None and decoded.ts >= until_ts:
            continue
        else:
            stats.samples += 1
            yield decoded


def series_from_buckets(buckets: Iterable[Bucket], step_seconds: int) -> dict[str, Series]:
    """Buckets (contiguous per service, in ts order, as the Bucketer emits them) -> series."""
    grouped: dict[str, list[Bucket]] = {}
    for bucket in buckets:
        grouped.setdefault(bucket.service, []).append(bucket)
    series = {}
    for service, items in sorted(grouped.items()):
        first, last = items[0].ts, items[-1].ts
        values = np.full((((last - first) // step_seconds) + 1, len(items[0].values)), np.nan)
        for bucket in items:
            values[(bucket.ts - first) // step_seconds] = bucket.values
        series[service] = Series(service, first, step_seconds, values)
    return series


def read_series(paths: Iterable[str | Path], config: Config, until_ts: float | None = None
                ) -> tuple[dict[str, Series], DecodeStats]:
    """Series of the samples in `paths` (with `until_ts`: of those before it)."""
    stats = DecodeStats()
    bucketer = Bucketer(tracked_metrics(config), config.step_seconds,
                        config.stream.allowed_lateness_seconds)
    buckets: list[Bucket] = []
    for i, sample in enumerate(decode_lines(iter_jsonl_lines(paths), stats, until_ts)):
        if bucketer.add(sample) == "late":
            stats.late += 1
        if i % 4096 == 0:
            buckets.extend(bucketer.close_ready())
    buckets.extend(bucketer.flush())
    if not buckets:
        raise DataError(f"no usable samples in {', '.join(map(str, paths))} ({stats.to_json()})")
    return series_from_buckets(buckets, config.step_seconds), stats


@dataclass(frozen=True, eq=False)
class Labelled:
    """A series with its failure events and the target of the window ending at each step."""

    series: Series
    events: list[FailureEvent]
    y: np.ndarray  # per step: 1, 0 or NaN (inside a failure)
    labelled_from: int = 0  # first step whose failure state is known (see `label`)


def label(series: Series, config: Config) -> Labelled:
    """Events and targets. Steps before the failure rule's metrics are first observed are
    *unlabelled* (an old history without the `incident` flag, say): nobody knows whether the
    service failed there, so they are neither failures nor healthy examples. Training uses
    them only to fit the input scaling; evaluation skips them."""
    metrics = tracked_metrics(config)
    failing = failing_steps(series.values, metrics, config.failure)
    runs = failure_runs(failing, config.failure_for_steps, config.horizon_steps)
    rule_columns = [metrics.index(c.metric) for c in config.failure.conditions]
    observed = np.flatnonzero(~np.isnan(series.values[:, rule_columns]).all(axis=1))
    labelled_from = int(observed[0]) if len(observed) else len(series.values)
    return Labelled(series, failure_events(series.service, series.first_ts, config.step_seconds, runs),
                    targets(len(series.values), runs, config.horizon_steps), labelled_from)


def window_view(values: np.ndarray, window_steps: int) -> np.ndarray:
    """(steps, n_metrics) -> (steps - window_steps + 1, window_steps, n_metrics), no copy."""
    if len(values) < window_steps:
        return np.zeros((0, window_steps, values.shape[1]))
    view = np.lib.stride_tricks.sliding_window_view(values, window_steps, axis=0)
    return view.transpose(0, 2, 1)


def iter_jsonl_lines(paths: Iterable[str | Path]) -> Iterator[str]:
    """Lines of JSONL files, and of the ``*.jsonl`` files in directories, in name order."""
    for path in map(Path, paths):
        files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
        for file in files:
            with file.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.strip():
                        yield line
