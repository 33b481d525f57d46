"""Failure labelling: the failure rule per step, failure runs, and the training target."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config.schema import Condition, FailureRule
from sentinel.core.labels import failing_steps, failure_events, failure_runs, rule_state, targets

NAN = np.nan
METRICS = ("qps", "error_rate", "p99_ms")
CONDITIONS = (Condition("error_rate", ">=", 0.05), Condition("p99_ms", ">=", 2000.0))


def _values(error_rate: list[float], p99_ms: list[float]) -> np.ndarray:
    qps = [100.0] * len(error_rate)
    return np.array([qps, error_rate, p99_ms], dtype=float).T


@pytest.mark.parametrize(("mode", "error_rate", "p99_ms", "expected"), [
    ("any", [0.0, 0.05, 0.0, 0.1], [100, 100, 2000, 3000], [0, 1, 1, 1]),
    ("all", [0.0, 0.05, 0.0, 0.1], [100, 100, 2000, 3000], [0, 0, 0, 1]),
    ("any", [0.01, 0.049], [1999, 10], [0, 0]),
    # a step where every metric of the rule is missing keeps the previous step's state
    ("any", [0.1, NAN, NAN, 0.0, NAN], [100, NAN, NAN, 100, NAN], [1, 1, 1, 0, 0]),
    ("all", [0.1, NAN, 0.0, NAN], [3000, NAN, 3000, NAN], [1, 1, 0, 0]),
    # nothing known yet: not failing
    ("any", [NAN, NAN, 0.2], [NAN, NAN, 100], [0, 0, 1]),
    # one metric missing: `any` still decides on the other one
    ("any", [NAN, NAN], [3000, 100], [1, 0]),
])
def test_failing_steps(mode: str, error_rate: list, p99_ms: list, expected: list) -> None:
    rule = FailureRule(mode, CONDITIONS, for_seconds=0)  # type: ignore[arg-type]

    result = failing_steps(_values(error_rate, p99_ms), METRICS, rule)

    assert result.dtype == bool
    assert result.astype(int).tolist() == expected


@pytest.mark.parametrize(("op", "value", "expected"), [
    (">", 1.0, [0, 0, 1]), (">=", 1.0, [0, 1, 1]), ("<", 1.0, [1, 0, 0]),
    ("<=", 1.0, [1, 1, 0]), ("==", 1.0, [0, 1, 0]), ("!=", 1.0, [1, 0, 1]),
])
def test_failing_steps_operators(op: str, value: float, expected: list) -> None:
    rule = FailureRule("any", (Condition("up", op, value),), 0)  # type: ignore[arg-type]

    result = failing_steps(np.array([[0.0], [1.0], [2.0]]), ("up",), rule)

    assert result.astype(int).tolist() == expected


@pytest.mark.parametrize(("failing", "for_steps", "runs"), [
    ([0, 1, 1, 1, 0, 1, 0], 1, [(1, 3), (5, 5)]),
    ([0, 1, 1, 1, 0, 1, 0], 2, [(1, 3)]),
    ([0, 1, 1, 1, 0, 1, 0], 3, [(1, 3)]),
    ([0, 1, 1, 1, 0, 1, 0], 4, []),
    ([1, 1, 0, 0, 1, 1], 2, [(0, 1), (4, 5)]),  # runs touching both ends of the series
    ([0, 0, 0], 1, []),
    ([], 1, []),
])
def test_failure_runs_honour_for_steps(failing: list, for_steps: int, runs: list) -> None:
    assert failure_runs(np.array(failing, dtype=bool), for_steps) == runs


@pytest.mark.parametrize(("n_steps", "runs", "horizon_steps", "expected"), [
    # the horizon_steps steps before a start are 1, the failure itself has no target
    (10, [(5, 6)], 3, [0, 0, 1, 1, 1, NAN, NAN, 0, 0, 0]),
    # clipped at the series start
    (6, [(2, 3)], 4, [1, 1, NAN, NAN, 0, 0]),
    (4, [(0, 1)], 2, [NAN, NAN, 0, 0]),
    # a failure soon after another: its warning steps never overwrite the earlier failure
    (10, [(2, 3), (6, 7)], 3, [1, 1, NAN, NAN, 1, 1, NAN, NAN, 0, 0]),
    (5, [], 3, [0, 0, 0, 0, 0]),
])
def test_targets(n_steps: int, runs: list, horizon_steps: int, expected: list) -> None:
    np.testing.assert_array_equal(targets(n_steps, runs, horizon_steps), np.array(expected))


def test_failure_events_are_placed_on_the_step_grid() -> None:
    events = failure_events("cart", 1000, 10, [(2, 4), (7, 7)])

    assert [(e.service, e.start_ts, e.end_ts) for e in events] == [
        ("cart", 1020, 1040), ("cart", 1070, 1070)]


def test_gap_inside_a_failure_does_not_split_it() -> None:
    rule = FailureRule("any", CONDITIONS, for_seconds=30)
    values = _values([0.0, 0.2, NAN, NAN, 0.2, 0.0], [100] * 6)
    values[2:4, 2] = NAN

    runs = failure_runs(failing_steps(values, METRICS, rule), for_steps=3)

    assert runs == [(1, 4)]


@pytest.mark.parametrize(
    ("failing", "merge_gap_steps", "runs"),
    [
        ([1, 1, 1, 0, 1, 1, 1], 3, [(0, 6)]),  # a one-step recovery: the same incident
        ([1, 1, 1, 0, 0, 0, 1, 1, 1], 3, [(0, 2), (6, 8)]),  # recovered for a full gap
        ([1, 1, 1, 0, 1, 1, 1], 0, [(0, 2), (4, 6)]),  # merging off
        ([1, 1, 1, 0, 1, 0, 1, 1, 1], 4, [(0, 8)]),  # a blip too short to count sits in the gap
    ],
)
def test_failure_runs_closer_than_the_merge_gap_are_one_incident(
    failing: list, merge_gap_steps: int, runs: list
) -> None:
    assert failure_runs(np.array(failing, dtype=bool), 3, merge_gap_steps) == runs


def test_rule_state_of_a_batch_agrees_with_the_series_labelling() -> None:
    rng = np.random.default_rng(3)
    values = rng.uniform(0, 0.04, (40, 3))
    values[10:16, 1] = 0.2  # error_rate over the limit for 6 steps
    values[12, :] = np.nan  # a lost sample inside: carries the failing state
    values[30:31, 1] = 0.2  # one step only
    rule = FailureRule("any", (Condition("error_rate", ">=", 0.05),), 20.0)
    series = failing_steps(values, METRICS, rule)
    windows = np.lib.stride_tricks.sliding_window_view(values, 8, axis=0).transpose(0, 2, 1)
    holding, failed = rule_state(windows, METRICS, rule, for_steps=3)
    ends = np.arange(7, 40)
    assert holding.tolist() == series[ends].tolist()
    assert failed.tolist() == [bool(series[t - 2: t + 1].all()) for t in ends]
    assert failed.sum() == 4 and holding.sum() == 7
