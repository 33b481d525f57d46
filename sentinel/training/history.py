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
from typing import BinaryIO

import numpy as np

from sentinel.config.schema import Config
from sentinel.core.buckets import Bucket, Bucketer
from sentinel.core.features import tracked_metrics
from sentinel.core.incidents import LabelSources, covered_steps, feedback_span
from sentinel.core.labels import FailureEvent, failing_steps, failure_events, failure_runs, targets
from sentinel.core.samples import MAX_MESSAGE_BYTES, Rejection, ReplayClock, Sample, decode
from sentinel.errors import DataError


@dataclass(frozen=True, eq=False)
class Series:
    """One service's steps, in ts order. Contiguous on the grid, except that a silence longer
    than the Bucketer's `max_gap_steps` is kept as that many missing steps followed by a jump
    (`step_ts` then holds each row's ts): memory follows the samples, never the time span
    between them (a sample in 2000 and one in 2025 make a few hundred rows, not 800 million).
    """

    service: str
    first_ts: int
    step_seconds: int
    values: np.ndarray  # (steps, n_metrics), NaN = missing
    step_ts: np.ndarray | None = None  # each row's ts when the series jumps; None: contiguous

    @property
    def ts(self) -> np.ndarray:
        if self.step_ts is not None:
            return self.step_ts
        return self.first_ts + self.step_seconds * np.arange(len(self.values))

    @property
    def last_ts(self) -> int:
        if self.step_ts is not None:
            return int(self.step_ts[-1])
        return self.first_ts + self.step_seconds * (len(self.values) - 1)

    def index(self, ts: np.ndarray | int) -> np.ndarray | int:
        """The row of each step ts (which must be one of the series' steps)."""
        if self.step_ts is None:
            return (ts - self.first_ts) // self.step_seconds
        found = np.searchsorted(self.step_ts, ts)
        return int(found) if np.ndim(found) == 0 else found


@dataclass
class DecodeStats:
    samples: int = 0
    late: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, object]:
        return {"samples": self.samples, "late": self.late, "rejected": dict(self.rejected)}


def decode_lines(lines: Iterable[bytes | str], stats: DecodeStats,
                 until_ts: float | None = None, max_future_seconds: float = 300.0
                 ) -> Iterator[Sample]:
    """Samples of the lines (rejections counted); with `until_ts`, only those before it.

    The daemon's decode, line by line; ``future_ts`` is judged against the data's own clock
    (samples.ReplayClock) with the config's `stream.max_future_seconds`."""
    for decoded in decode_replayed(lines, max_future_seconds):
        if isinstance(decoded, Rejection):
            stats.rejected[decoded.reason] += 1
        elif until_ts is not None and decoded.ts >= until_ts:
            continue
        else:
            stats.samples += 1
            yield decoded


def decode_replayed(lines: Iterable[bytes | str], max_future_seconds: float
                    ) -> Iterator[Sample | Rejection]:
    """Each line's decision, in order: `decode` with ``future_ts`` judged by a ReplayClock."""
    return ReplayClock(max_future_seconds).admit_all(decode(line) for line in lines)


def series_from_buckets(buckets: Iterable[Bucket], step_seconds: int) -> dict[str, Series]:
    """Buckets (per service in ts order, as the Bucketer emits them) -> series, one row per
    bucket: the Bucketer emits every step of a silence up to its `max_gap_steps` and then
    jumps, and the series keeps that jump instead of filling it (see Series)."""
    grouped: dict[str, list[Bucket]] = {}
    for bucket in buckets:
        grouped.setdefault(bucket.service, []).append(bucket)
    series = {}
    for service, items in sorted(grouped.items()):
        ts = np.fromiter((b.ts for b in items), dtype=np.int64, count=len(items))
        values = np.stack([b.values for b in items])
        contiguous = bool(np.all(np.diff(ts) == step_seconds))
        series[service] = Series(service, int(ts[0]), step_seconds, values,
                                 None if contiguous else ts)
    return series


def read_series(paths: Iterable[str | Path], config: Config, until_ts: float | None = None
                ) -> tuple[dict[str, Series], DecodeStats]:
    """Series of the samples in `paths` (with `until_ts`: of those before it)."""
    stats = DecodeStats()
    bucketer = Bucketer(tracked_metrics(config), config.step_seconds,
                        config.stream.allowed_lateness_seconds)
    buckets: list[Bucket] = []
    lines = iter_jsonl_lines(paths)
    for i, sample in enumerate(decode_lines(lines, stats, until_ts,
                                            config.stream.max_future_seconds)):
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
    # per step: an operator's verdict relabelled the window ending there (see `label`)
    feedback: np.ndarray | None = None


def label(series: Series, config: Config, sources: LabelSources | None = None) -> Labelled:
    """Events and targets. Steps before the failure rule's metrics are first observed are
    *unlabelled* (an old history without the `incident` flag, say): nobody knows whether the
    service failed there, so they are neither failures nor healthy examples. Training uses
    them only to fit the input scaling; evaluation skips them.

    With `sources` (training only): in mode "incidents" the recorded incidents alone make the
    events (labelled from `incidents_from_ts`, else from the first step), in mode "both"
    they join the rule's; an incident counts however short it was (no `for`). Operator
    feedback then relabels the windows around each judged episode (`feedback` marks them),
    except windows inside a failure, which stay without a target."""
    sources = sources or LabelSources()
    metrics = tracked_metrics(config)
    failing = failing_steps(series.values, metrics, config.failure)
    rule_columns = [metrics.index(c.metric) for c in config.failure.conditions]
    observed = np.flatnonzero(~np.isnan(series.values[:, rule_columns]).all(axis=1))
    labelled_from = int(observed[0]) if len(observed) else len(series.values)
    if sources.mode == "rule":
        runs = failure_runs(failing, config.failure_for_steps, config.horizon_steps)
    else:
        ts = series.ts
        recorded = covered_steps(ts, config.step_seconds, [
            (i.start_ts, i.end_ts) for i in sources.incidents if i.service == series.service])
        if sources.mode == "both":
            for s, e in failure_runs(failing, config.failure_for_steps):
                recorded[s: e + 1] = True
        runs = failure_runs(recorded, 1, config.horizon_steps)
        from_ts = sources.incidents_from_ts
        incidents_from = 0 if from_ts is None else int(np.searchsorted(ts, from_ts))
        labelled_from = (incidents_from if sources.mode == "incidents"
                         else min(labelled_from, incidents_from))
    events = failure_events(series.service, series.first_ts, config.step_seconds, runs)
    if series.step_ts is not None:  # a series with jumps: each run's ts from its rows
        events = [FailureEvent(series.service, int(series.step_ts[s]), int(series.step_ts[e]))
                  for s, e in runs]
    y = targets(len(series.values), runs, config.horizon_steps)
    judged = None
    mine = [f for f in sources.feedback if f.service == series.service]
    if mine:
        judged = np.zeros(len(y), dtype=bool)
        for item in mine:
            first, last = feedback_span(item, config.horizon_seconds)
            rows = (series.ts >= first) & (series.ts <= last) & ~np.isnan(y)
            y[rows] = 0.0 if item.verdict == "false_alarm" else 1.0
            judged |= rows
    return Labelled(series, events, y, labelled_from, judged)


def window_view(values: np.ndarray, window_steps: int) -> np.ndarray:
    """(steps, n_metrics) -> (steps - window_steps + 1, window_steps, n_metrics), no copy."""
    if len(values) < window_steps:
        return np.zeros((0, window_steps, values.shape[1]))
    view = np.lib.stride_tricks.sliding_window_view(values, window_steps, axis=0)
    return view.transpose(0, 2, 1)


def iter_jsonl_lines(paths: Iterable[str | Path]) -> Iterator[bytes]:
    """Lines of JSONL files, and of the ``*.jsonl`` files in directories, in name order, as
    bytes: `decode` checks the encoding exactly as it does for a Kafka value (a line of
    invalid UTF-8 is rejected, never read with replacement characters)."""
    paths = [Path(p) for p in paths]
    for path in paths:  # all checked now: a typo fails at once, not after an hour of reading
        if not path.exists():
            raise DataError(f"no such file or directory: {path}")
    return _lines_of(paths)


def _lines_of(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
        for file in files:
            try:
                with file.open("rb") as handle:
                    yield from _bounded_lines(handle)
            except (IsADirectoryError, PermissionError) as exc:
                raise DataError(f"cannot read {file}: {exc.strerror}") from exc


def _bounded_lines(handle: BinaryIO) -> Iterator[bytes]:
    """Non-blank lines without their terminator; one longer than a message may be is cut
    (rejected ``too_large`` by `decode`) and the rest of it skipped: a file with no newline
    must not be read into memory whole."""
    limit = MAX_MESSAGE_BYTES + 2  # room for the line's own b"\r\n"
    while line := handle.readline(limit):
        if len(line) == limit and not line.endswith(b"\n"):
            while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
        line = line.removesuffix(b"\n").removesuffix(b"\r")  # the terminator is no part of it
        if line.strip():  # a blank line is no record (an empty Kafka message is one)
            yield line
