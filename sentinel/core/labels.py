"""Failure events from history, and the training target.

A service is *failing* at a step when the config's `failure` rule holds (``any`` or ``all``
of its conditions); a failure *event* is a run of failing steps at least `for` long, and it
starts at the first step of the run. A step with the rule's metrics missing keeps the
previous step's state: a lost sample neither ends a failure nor starts a new one. Two
events less than one horizon apart are merged into one: a relapse after a short recovery is
the same incident, and a detector cannot be asked to announce it again.

The target of the window ending at step t is 1 when a failure event starts in
(t, t + horizon], else 0. Windows whose last step lies inside an ongoing failure
(start <= t <= end) get no target (NaN): the service has already failed, there is nothing
left to predict, and counting them as negatives would teach the model that a failing
service looks healthy. Training skips them; backtests neither reward nor punish alerts there.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sentinel.config.schema import FailureRule

_OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class FailureEvent:
    service: str
    start_ts: int
    end_ts: int  # start of the last failing step


def failing_steps(values: np.ndarray, metrics: tuple[str, ...], rule: FailureRule) -> np.ndarray:
    """(..., steps, n_metrics) -> bool (..., steps): the rule holds, gaps carrying the previous
    state (a batch of windows works like one series)."""
    known = np.zeros(values.shape[:-1], dtype=bool)
    holds = np.full(values.shape[:-1], rule.mode == "all")
    for condition in rule.conditions:
        column = values[..., metrics.index(condition.metric)]
        present = ~np.isnan(column)
        with np.errstate(invalid="ignore"):
            result = _OPS[condition.op](column, condition.value) & present
        known |= present
        holds = (holds | result) if rule.mode == "any" else (holds & (result | ~present))
    # carry the last known state over steps where none of the rule's metrics is present
    index = np.where(known, np.arange(values.shape[-2]), -1)
    np.maximum.accumulate(index, axis=-1, out=index)
    return np.where(index >= 0, np.take_along_axis(holds, np.maximum(index, 0), axis=-1), False)


def rule_state(windows: np.ndarray, metrics: tuple[str, ...], rule: FailureRule, for_steps: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per window (n, steps, n_metrics): whether the rule holds at its last step, and whether it
    has held for `for_steps` steps up to it (the service is failing, as labels would say)."""
    failing = failing_steps(windows, metrics, rule)
    last = failing[:, -min(max(1, for_steps), failing.shape[1]):]
    return failing[:, -1], last.all(axis=1)


def failure_runs(failing: np.ndarray, for_steps: int, merge_gap_steps: int = 0
                 ) -> list[tuple[int, int]]:
    """Index ranges [start, end] (inclusive) of runs of at least `for_steps` failing steps;
    runs less than `merge_gap_steps` apart are one failure (a service that recovers for a
    few steps and relapses has not had a new incident)."""
    padded = np.concatenate(([False], failing, [False])).astype(np.int8)
    edges = np.diff(padded)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    runs: list[tuple[int, int]] = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if e - s + 1 < for_steps:
            continue
        if runs and s - runs[-1][1] - 1 < merge_gap_steps:
            runs[-1] = (runs[-1][0], e)
        else:
            runs.append((s, e))
    return runs


def targets(n_steps: int, runs: list[tuple[int, int]], horizon_steps: int) -> np.ndarray:
    """Target per step t (window ending at t): 1.0, 0.0, or NaN inside a failure."""
    y = np.zeros(n_steps)
    for start, _end in runs:
        y[max(0, start - horizon_steps): start] = 1.0
    for start, end in runs:
        y[start: end + 1] = np.nan
    return y


def failure_events(service: str, first_ts: int, step_seconds: int,
                   runs: list[tuple[int, int]]) -> list[FailureEvent]:
    return [FailureEvent(service, first_ts + s * step_seconds, first_ts + e * step_seconds)
            for s, e in runs]
