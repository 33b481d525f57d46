"""Points of foreign series -> Sentinel samples, one per (service, step), on event time.

    >>> assembler = Assembler(mappings(config), config.input.service_label, step_seconds=10)
    >>> assembler.add(points, origin=(partition, offset))
    >>> samples = assembler.close_ready()     # the steps every service has moved past

Per mapped metric (a feature's `source`, or `input.metrics`), each matching series keeps its
latest point in the step; at the step's close the series' values are combined by
`aggregate`:

- a gauge: the series' value;
- a counter: the per-second rate since the series' previous point in an earlier step,
  ``(v - v_prev) / (t - t_prev)``; a value below the previous one is a reset and counts from
  zero (``v / (t - t_prev)``), as Prometheus's ``rate`` does. Because the rate is measured
  between whatever two points this process saw, a replica that sees only some of a series'
  points (an unkeyed topic split over replicas) still measures a correct average rate;
- a histogram quantile: ``histogram_quantile(q, sum by (le) (increase(<metric>_bucket)))`` over
  the step, interpolated inside the bucket like Prometheus.

A NaN (staleness marker, no recorded value) is a gap and forgets the series' previous point,
so a series that comes back does not produce a rate across its absence. A step in which no
mapped metric has a value emits no sample: the daemon sees the gap.

At-least-once: `pending_offsets()` gives, per partition, the oldest offset whose points still
sit in an open step; the bridge commits no further than that.

Pure: time is the points' event time; nothing here reads a clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sentinel.config.schema import Config, MappedMetric, SourceSpec
from sentinel.core.samples import Sample
from sentinel.ingest.points import Point

SeriesKey = tuple[tuple[str, str], ...]
SERIES_TTL_STEPS = 60  # a counter's previous point older than this is forgotten (series churn)


def mappings(config: Config) -> tuple[MappedMetric, ...]:
    """Every metric to assemble: features (by their own name when they name no source) and
    `input.metrics`; sources with only `promql` are for `sentinel backfill`."""
    features = tuple(MappedMetric(f.name, f.source or SourceSpec(metric=f.name))
                     for f in config.features)
    return tuple(m for m in features + config.input.metrics if m.source.metric is not None)


@dataclass(frozen=True, slots=True)
class _Output:
    name: str
    source: SourceSpec
    kind: str  # gauge | counter | histogram
    matchers: tuple[tuple[str, re.Pattern[str]], ...]

    def matches(self, labels: dict[str, str]) -> bool:
        return all(pattern.fullmatch(labels.get(label, "")) for label, pattern in self.matchers)


@dataclass(slots=True)
class _Service:
    watermark: float = -math.inf
    closed_until: int = -(1 << 62)  # steps before this are closed: their points are late
    # step -> output name -> series -> (ts, value): the latest point of each series in the step
    open: dict[int, dict[str, dict[SeriesKey, tuple[float, float]]]] = field(default_factory=dict)
    origins: dict[int, dict[int, int]] = field(default_factory=dict)  # step -> partition -> offset
    previous: dict[tuple[str, SeriesKey], tuple[float, float]] = field(default_factory=dict)


@dataclass
class AddCounts:
    accepted: int = 0
    late: int = 0  # for a step already emitted
    unmapped: int = 0  # a series no mapping asks for (foreign topics carry everything)
    no_service: int = 0  # the service label is missing or empty


class Assembler:
    def __init__(self, sources: Iterable[MappedMetric], service_label: str, step_seconds: int,
                 allowed_lateness_seconds: float = 0.0) -> None:
        self.service_label = service_label
        self.step_seconds = step_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self._outputs: list[_Output] = []
        self._by_metric: dict[str, list[_Output]] = {}
        for mapped in sources:
            src = mapped.source
            kind = "histogram" if src.histogram_quantile is not None else (
                "counter" if src.counter else "gauge")
            output = _Output(mapped.name, src, kind,
                             tuple((label, re.compile(rx)) for label, rx in src.match))
            series = f"{src.metric}_bucket" if kind == "histogram" else str(src.metric)
            self._outputs.append(output)
            self._by_metric.setdefault(series, []).append(output)
        self._services: dict[str, _Service] = {}
        self._advanced: set[str] = set()

    def add(self, points: Iterable[Point], origin: tuple[int, int] | None = None) -> AddCounts:
        """Take a message's points; `origin` = (partition, offset) for `pending_offsets`."""
        counts = AddCounts()
        step_seconds, label = self.step_seconds, self.service_label
        for metric, labels, ts, value in points:
            outputs = self._by_metric.get(metric)
            if outputs is None:
                counts.unmapped += 1
                continue
            service = labels.get(label)
            if not service:
                counts.no_service += 1
                continue
            state = self._services.get(service)
            if state is None:
                state = self._services[service] = _Service()
            step = int(ts // step_seconds) * step_seconds
            if step < state.closed_until:
                counts.late += 1
                continue
            key: SeriesKey | None = None
            for output in outputs:
                if output.matchers and not output.matches(labels):  # type: ignore[arg-type]
                    continue
                if key is None:
                    key = tuple(sorted(labels.items()))
                cell = state.open.setdefault(step, {}).setdefault(output.name, {})
                prior = cell.get(key)
                if prior is None or ts >= prior[0]:
                    cell[key] = (ts, value)
            if key is None:
                counts.unmapped += 1
                continue
            counts.accepted += 1
            if ts > state.watermark:
                state.watermark = ts
            self._advanced.add(service)
            if origin is not None:
                partition, offset = origin
                first = state.origins.setdefault(step, {})
                if offset < first.get(partition, offset + 1):
                    first[partition] = offset
        return counts

    def close_ready(self) -> list[Sample]:
        """Samples of the steps that the services' watermarks (less the lateness) passed."""
        out: list[Sample] = []
        for service in self._advanced:
            state = self._services[service]
            limit = state.watermark - self.allowed_lateness_seconds
            for step in sorted(s for s in state.open if s + self.step_seconds <= limit):
                self._close(service, state, step, out)
        self._advanced.clear()
        return out

    def flush(self) -> list[Sample]:
        """Samples of every open step (end of input, or an idle input)."""
        out: list[Sample] = []
        for service, state in self._services.items():
            for step in sorted(state.open):
                self._close(service, state, step, out)
        self._advanced.clear()
        return out

    def pending_offsets(self) -> dict[int, int]:
        """Partition -> the oldest offset with points still in an open step."""
        oldest: dict[int, int] = {}
        for state in self._services.values():
            for first in state.origins.values():
                for partition, offset in first.items():
                    if offset < oldest.get(partition, offset + 1):
                        oldest[partition] = offset
        return oldest

    @property
    def open_steps(self) -> int:
        return sum(len(state.open) for state in self._services.values())

    def _close(self, service: str, state: _Service, step: int, out: list[Sample]) -> None:
        cells = state.open.pop(step)
        state.origins.pop(step, None)
        state.closed_until = max(state.closed_until, step + self.step_seconds)
        metrics: dict[str, float] = {}
        for output in self._outputs:
            cell = cells.get(output.name)
            if not cell:
                continue
            if output.kind == "gauge":
                values = [v for _, v in cell.values() if math.isfinite(v)]
            elif output.kind == "counter":
                values = [rate for key, point in cell.items()
                          if (rate := self._rate(state, output.name, key, point)) is not None]
            else:
                quantile = self._quantile(state, output, cell)
                values = [] if quantile is None else [quantile]
            if values:
                value = _aggregate(output.source.aggregate, values) * output.source.scale
                if math.isfinite(value):
                    metrics[output.name] = value
        oldest = step - SERIES_TTL_STEPS * self.step_seconds
        for key in [k for k, (ts, _) in state.previous.items() if ts < oldest]:
            del state.previous[key]
        if metrics:
            out.append(Sample(service, float(step), metrics))

    @staticmethod
    def _increase(state: _Service, name: str, key: SeriesKey, point: tuple[float, float]
                  ) -> tuple[float, float] | None:
        """(increase, seconds) since the series' previous point; None without one."""
        ts, value = point
        previous = state.previous.get((name, key))
        if not math.isfinite(value):
            state.previous.pop((name, key), None)  # stale: no rate across the absence
            return None
        state.previous[(name, key)] = point
        if previous is None or ts <= previous[0]:
            return None
        increase = value - previous[1] if value >= previous[1] else value  # a reset counts from 0
        return increase, ts - previous[0]

    def _rate(self, state: _Service, name: str, key: SeriesKey, point: tuple[float, float]
              ) -> float | None:
        found = self._increase(state, name, key, point)
        return None if found is None else found[0] / found[1]

    def _quantile(self, state: _Service, output: _Output,
                  cell: dict[SeriesKey, tuple[float, float]]) -> float | None:
        by_le: dict[float, float] = {}
        for key, point in cell.items():
            found = self._increase(state, output.name, key, point)
            le = dict(key).get("le")
            if found is None or le is None:
                continue
            try:
                bound = float(le)
            except ValueError:
                continue
            by_le[bound] = by_le.get(bound, 0.0) + found[0]
        assert output.source.histogram_quantile is not None
        return bucket_quantile(output.source.histogram_quantile, sorted(by_le.items()))


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile`` on (upper bound, cumulative count) pairs, sorted.

        >>> bucket_quantile(0.5, [(0.1, 50.0), (0.5, 100.0), (math.inf, 100.0)])
        0.1
    """
    if not buckets or buckets[-1][0] != math.inf or buckets[-1][1] <= 0:
        return None
    counts = [count for _, count in buckets]
    for i in range(1, len(counts)):  # increases measured per bucket may disagree slightly
        counts[i] = max(counts[i], counts[i - 1])
    rank = q * counts[-1]
    i = next(i for i, count in enumerate(counts) if count >= rank)
    if i == len(buckets) - 1:
        return buckets[-2][0] if len(buckets) > 1 else None
    start = buckets[i - 1][0] if i > 0 else (0.0 if buckets[0][0] > 0 else buckets[0][0])
    below = counts[i - 1] if i > 0 else 0.0
    inside = counts[i] - below
    if inside <= 0:
        return buckets[i][0]
    return start + (buckets[i][0] - start) * (rank - below) / inside


def _aggregate(how: str, values: list[float]) -> float:
    if how == "max":
        return max(values)
    total = math.fsum(values)
    return total / len(values) if how == "mean" else total
