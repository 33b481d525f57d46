"""Arbitrary input through the whole pure pipeline: decode -> buckets -> windows -> score.

The model here is a fake that checks what reaches it (no TensorFlow needed): every value it
is given must be finite, and it answers with a risk derived from its input.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.config.load import parse_config
from sentinel.core.features import Scaler, transform
from sentinel.core.pipeline import Pipeline
from sentinel.core.samples import REASONS, Rejection, Sample, decode

CONFIG = parse_config({
    "step": "10s", "window": "40s", "horizon": "20s",
    "features": [{"name": "qps", "transform": "log1p", "center": "window"},
                 {"name": "p99_ms", "transform": "log1p"}, {"name": "error_rate"}],
    "failure": {"any": [{"metric": "error_rate", "op": ">=", "value": 0.05}], "for": "20s"},
    "alerting": {"threshold": 0.5, "for_steps": 1},
    "stream": {"allowed_lateness": "20s", "max_missing_fraction": 0.5},
})
T0 = 1_763_942_400


class CheckingModel:
    """Scales like the real Scorer, asserts the model input is finite, returns a risk."""

    def __init__(self) -> None:
        self.scaler = Scaler((0.0, 5.0, 0.01), (1.0, 2.0, 0.05))
        self.windows_seen = 0

    def score(self, windows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        x = self.scaler.apply(transform(windows, CONFIG.features))
        assert np.isfinite(x).all(), "a non-finite value reached the model"
        self.windows_seen += len(windows)
        return 1.0 / (1.0 + np.exp(-x.mean(axis=(1, 2))))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)
metric_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                          st.none(), st.text(max_size=5), st.booleans())
plausible = st.fixed_dictionaries({
    "service": st.sampled_from(["cart", "checkout", "", " "]) | st.text(max_size=5),
    "ts": st.floats(T0 - 100, T0 + 3000) | st.integers(T0 - 100, T0 + 3000) | st.text(max_size=5),
    "metrics": st.dictionaries(st.sampled_from(["qps", "p99_ms", "error_rate", "cpu", "x"]),
                               metric_values, max_size=5),
})
messages = st.lists(
    st.one_of(st.binary(max_size=64),
              json_values.map(lambda v: json.dumps(v).encode()),
              plausible.map(lambda v: json.dumps(v).encode())),
    min_size=1, max_size=120)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_arbitrary_messages_never_break_the_pipeline(raw: list[bytes]) -> None:
    model = CheckingModel()
    pipeline = Pipeline(CONFIG, model)
    samples = []
    for message in raw:
        decoded = decode(message, now=T0 + 3000)
        if isinstance(decoded, Rejection):
            assert decoded.reason in REASONS and decoded.detail
        else:
            assert all(math.isfinite(v) for v in decoded.metrics.values())
            samples.append(decoded)
    results = [pipeline.process(samples[i: i + 7]) for i in range(0, len(samples), 7)]
    results.append(pipeline.flush())
    for result in results:
        for score in result.scores:
            assert 0.0 <= score.risk <= 1.0 and math.isfinite(score.risk)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(metric_values, metric_values, metric_values), min_size=8, max_size=40))
def test_wild_metric_values_reach_the_model_finite(values: list[tuple]) -> None:
    """Dense, well-formed samples whose metric values are anything JSON can carry."""
    model = CheckingModel()
    pipeline = Pipeline(CONFIG, model)
    raw = [json.dumps({"service": "cart", "ts": T0 + 10 * i,
                       "metrics": {"qps": q, "p99_ms": p, "error_rate": e}}).encode()
           for i, (q, p, e) in enumerate(values)]
    samples = [d for d in (decode(m) for m in raw) if isinstance(d, Sample)]
    scores = [s for r in (pipeline.process(samples), pipeline.flush()) for s in r.scores]
    assert all(0.0 <= s.risk <= 1.0 for s in scores)
    if len(samples) == len(values) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for row in values for v in row):
        assert scores, "a dense, valid stream of 8+ steps fills 4-step windows"


def _stream(n_steps: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [Sample(service, T0 + 10 * step + float(rng.uniform(0, 9)),
                   {"qps": float(rng.uniform(10, 1000)), "p99_ms": float(rng.uniform(50, 3000)),
                    "error_rate": float(rng.uniform(0, 0.1))})
            for step in range(n_steps) for service in ("cart", "checkout")]


def _scores(samples: list[Sample], chunk: int) -> list[tuple[str, int, float]]:
    pipeline = Pipeline(CONFIG, CheckingModel())
    results = [pipeline.process(samples[i: i + chunk]) for i in range(0, len(samples), chunk)]
    results.append(pipeline.flush())
    return sorted((s.service, s.ts, round(s.risk, 9)) for r in results for s in r.scores)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 50))
def test_disorder_within_the_allowed_lateness_scores_like_the_sorted_stream(seed: int,
                                                                             chunk: int) -> None:
    samples = _stream(40, seed)
    shuffled = list(samples)
    rng = random.Random(seed)
    # swap neighbours at most one step apart: well inside the 20 s allowed lateness
    for i in range(0, len(shuffled) - 2, 3):
        if rng.random() < 0.5:
            shuffled[i], shuffled[i + 2] = shuffled[i + 2], shuffled[i]
    duplicated = shuffled + shuffled[-10:]  # redelivered tail: duplicates merge, change nothing
    expected = _scores(samples, len(samples))
    assert len(expected) > 60
    assert _scores(duplicated, chunk) == expected


def test_samples_beyond_the_lateness_are_counted_late_not_scored() -> None:
    samples = _stream(20, 1)
    pipeline = Pipeline(CONFIG, CheckingModel())
    pipeline.process(samples)
    stale = Sample("cart", T0 + 5.0, {"qps": 1e9, "p99_ms": 1e9, "error_rate": 1.0})
    result = pipeline.process([stale])
    assert result.late == [stale]
    assert result.scores == []


def test_a_future_timestamp_is_rejected_and_never_advances_a_window() -> None:
    now = T0 + 200
    future = json.dumps({"service": "cart", "ts": now + 3600, "metrics": {"qps": 1.0}})
    decoded = decode(future, now=now)
    assert isinstance(decoded, Rejection) and decoded.reason == "future_ts"
    pipeline = Pipeline(CONFIG, CheckingModel())
    before = pipeline.process([s for s in _stream(10, 2) if s.ts < now])
    assert before.scores  # the stream itself scores
    # nothing was admitted past `now`, so no bucket after it closed
    assert max(b.ts for b in before.buckets) < now
