"""Event-time buckets: grid alignment, deterministic merging, watermark, gaps, lateness."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from sentinel.core.buckets import Bucket, Bucketer
from sentinel.core.samples import Sample

METRICS = ("qps", "p99_ms")
T0 = 1_763_899_200  # on the 10 s grid


def _bucketer(lateness: float = 20, max_gap_steps: int = 360) -> Bucketer:
    return Bucketer(METRICS, step_seconds=10, allowed_lateness_seconds=lateness,
                    max_gap_steps=max_gap_steps)


def _s(ts: float, service: str = "cart", **metrics: float) -> Sample:
    return Sample(service, float(ts), metrics or {"qps": 1.0})


def _rows(buckets: list[Bucket]) -> list[tuple]:
    """Comparable form of buckets (NaN compares equal to NaN via its repr)."""
    return [(b.service, b.ts, b.n_samples, tuple(map(repr, b.values.tolist()))) for b in buckets]


@pytest.mark.parametrize(("ts", "bucket_ts"), [
    (T0, T0), (T0 + 0.001, T0), (T0 + 9.999, T0), (T0 + 10, T0 + 10), (T0 - 0.5, T0 - 10),
    (T0 + 15, T0 + 10),
])
def test_sample_is_aligned_down_to_the_step_grid(ts: float, bucket_ts: int) -> None:
    b = _bucketer()
    b.add(_s(ts))

    (bucket,) = b.flush()

    assert bucket.ts == bucket_ts == b.align(ts) == math.floor(ts / 10) * 10


SAME_BUCKET = [
    _s(T0 + 1, qps=5.0, p99_ms=100.0),
    _s(T0 + 7, qps=3.0),  # latest ts wins qps, p99 stays from the latest sample that has it
    _s(T0 + 4, qps=9.0, p99_ms=300.0),
    _s(T0 + 7, qps=4.0),  # same ts: the larger value wins
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(SAME_BUCKET)))))
def test_samples_in_one_bucket_merge_the_same_in_any_order(order: tuple[int, ...]) -> None:
    b = _bucketer()
    for i in order:
        assert b.add(SAME_BUCKET[i]) == "accepted"

    (bucket,) = b.flush()

    assert bucket.ts == T0
    assert bucket.n_samples == 4
    assert bucket.values.tolist() == [4.0, 300.0]


def test_bucket_closes_only_when_the_watermark_passes_its_end() -> None:
    b = _bucketer(lateness=20)
    b.add(_s(T0))

    b.add(_s(T0 + 29))  # watermark T0 + 9 < end of first bucket T0 + 10
    assert b.close_ready() == []

    b.add(_s(T0 + 30))  # watermark T0 + 10 == end: closed
    assert [x.ts for x in b.close_ready()] == [T0]
    assert b.close_ready() == []  # closed once


def test_sample_for_a_closed_bucket_is_late_and_says_how_late() -> None:
    b = _bucketer(lateness=20)
    for ts in (T0, T0 + 10, T0 + 20, T0 + 60):
        b.add(_s(ts))
    assert [x.ts for x in b.close_ready()] == [T0, T0 + 10, T0 + 20, T0 + 30]

    late = _s(T0 + 5)
    assert b.add(late) == "late"
    assert b.lateness_seconds(late) == 30.0  # its bucket is 3 steps behind the closed edge
    assert b.lateness_seconds(_s(T0 + 35)) == 0.0
    # the late sample changed nothing
    assert [(x.ts, x.n_samples) for x in b.flush()] == [(T0 + 40, 0), (T0 + 50, 0), (T0 + 60, 1)]


def test_out_of_order_sample_at_a_services_start_is_not_late() -> None:
    b = _bucketer(lateness=20)
    b.add(_s(T0 + 12))
    assert b.close_ready() == []  # nothing has closed, so nothing can be late yet

    assert b.add(_s(T0 + 3)) == "accepted"
    b.add(_s(T0 + 40))
    assert [(x.ts, x.n_samples) for x in b.close_ready()] == [(T0, 1), (T0 + 10, 1)]


def test_lateness_of_an_unknown_service_is_zero() -> None:
    assert _bucketer().lateness_seconds(_s(T0, service="new")) == 0.0


def test_a_step_without_samples_is_an_explicit_gap_bucket() -> None:
    b = _bucketer()
    b.add(_s(T0, qps=1.0, p99_ms=10.0))
    b.add(_s(T0 + 20, qps=2.0, p99_ms=20.0))

    first, gap, last = b.flush()

    assert (first.ts, gap.ts, last.ts) == (T0, T0 + 10, T0 + 20)
    assert gap.is_gap and gap.n_samples == 0 and gap.service == "cart"
    assert np.isnan(gap.values).all() and gap.values.shape == (len(METRICS),)
    assert not first.is_gap and not last.is_gap


def test_flush_closes_every_open_bucket_of_every_service() -> None:
    b = _bucketer(lateness=300)
    b.add(_s(T0, service="cart"))
    b.add(_s(T0 + 10, service="cart"))
    b.add(_s(T0 + 50, service="pay"))
    assert b.close_ready() == []

    closed = b.flush()

    assert sorted((x.service, x.ts) for x in closed) == [
        ("cart", T0), ("cart", T0 + 10), ("pay", T0 + 50)]
    assert b.flush() == []


@pytest.mark.parametrize("silence_steps", [361, 8640, 60_000])
def test_long_silence_emits_at_most_max_gap_steps_gap_buckets(silence_steps: int) -> None:
    b = _bucketer(lateness=20, max_gap_steps=360)
    b.add(_s(T0))
    b.close_ready()  # the first bucket stays open: nothing passed its watermark yet
    b.add(_s(T0 + silence_steps * 10))

    closed = b.close_ready() + b.flush()

    gaps = [x for x in closed if x.is_gap]
    assert len(gaps) == 360
    assert [x.ts for x in closed if not x.is_gap] == [T0, T0 + silence_steps * 10]
    # the gap buckets that are emitted lead contiguously up to the sample after the silence
    assert [x.ts for x in gaps] == list(range(T0 + (silence_steps - 360) * 10,
                                              T0 + silence_steps * 10, 10))


def test_long_silence_after_a_closed_bucket_emits_at_most_max_gap_steps() -> None:
    b = _bucketer(lateness=0, max_gap_steps=5)
    b.add(_s(T0))
    b.add(_s(T0 + 10))
    assert [x.ts for x in b.close_ready()] == [T0]
    b.add(_s(T0 + 1000))

    closed = b.close_ready()

    assert [x.ts for x in closed] == [T0 + 10, *range(T0 + 950, T0 + 1000, 10)]
    assert sum(x.is_gap for x in closed) == 5


def test_short_silence_is_emitted_step_by_step() -> None:
    b = _bucketer(max_gap_steps=5)
    b.add(_s(T0))
    b.add(_s(T0 + 60))

    assert [x.ts for x in b.flush()] == list(range(T0, T0 + 70, 10))


def test_metrics_that_are_not_tracked_are_ignored() -> None:
    b = _bucketer()
    b.add(_s(T0, qps=1.0, cpu=0.9, error_rate=0.5))

    (bucket,) = b.flush()

    assert bucket.values.shape == (2,)
    assert bucket.values[0] == 1.0 and np.isnan(bucket.values[1])


def test_drop_forgets_a_service() -> None:
    b = _bucketer()
    b.add(_s(T0, service="cart"))
    b.add(_s(T0, service="pay"))

    b.drop("cart")
    b.drop("unknown")  # no error

    assert b.services == ["pay"]
    assert [x.service for x in b.flush()] == ["pay"]
    # a dropped service starts afresh: an old timestamp is not late any more
    assert b.add(_s(T0 - 100, service="cart")) == "accepted"


def test_services_have_independent_watermarks() -> None:
    b = _bucketer(lateness=20)
    b.add(_s(T0, service="cart"))
    b.add(_s(T0 + 1000, service="pay"))

    assert b.close_ready() == []  # pay's progress does not close cart's bucket
    assert b.add(_s(T0 + 5, service="cart")) == "accepted"


def _stream(seed: int) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for step in range(200):
        for service in ("cart", "pay"):
            if rng.random() < 0.15:
                continue  # a lost sample: a gap bucket
            for _ in range(rng.choice((1, 1, 2))):
                ts = T0 + step * 10 + rng.uniform(0, 9.9)
                samples.append(Sample(service, ts, {"qps": rng.uniform(0, 100),
                                                    "p99_ms": rng.uniform(0, 500)}))
    return sorted(samples, key=lambda s: s.ts)


def _shuffle_within(samples: list[Sample], lateness: float, seed: int) -> list[Sample]:
    """Arrival order whose disorder stays within `lateness`: jitter each arrival time."""
    rng = random.Random(seed)
    keyed = [(s.ts + rng.uniform(0, lateness), s) for s in samples]
    return [s for _key, s in sorted(keyed, key=lambda pair: pair[0])]


def _run(samples: list[Sample], lateness: float) -> tuple[list[tuple], list[str]]:
    b = _bucketer(lateness=lateness)
    closed, outcomes = [], []
    for sample in samples:
        outcomes.append(b.add(sample))
        closed += b.close_ready()
    closed += b.flush()
    return sorted(_rows(closed)), outcomes


@pytest.mark.parametrize("seed", range(5))
def test_disorder_within_allowed_lateness_gives_the_sorted_result(seed: int) -> None:
    samples = _stream(seed)
    shuffled = _shuffle_within(samples, lateness=30, seed=seed)
    assert shuffled != samples

    sorted_rows, _ = _run(samples, lateness=30)
    shuffled_rows, outcomes = _run(shuffled, lateness=30)

    assert set(outcomes) == {"accepted"}
    assert shuffled_rows == sorted_rows
    for service in ("cart", "pay"):  # contiguous on the grid, no duplicates
        ts = [row[1] for row in sorted_rows if row[0] == service]
        assert ts == list(range(ts[0], ts[-1] + 10, 10))
