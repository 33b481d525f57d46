"""Backtest figures: early detection, lead time, false alerts per day, PR-AUC."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.config.load import parse_config
from sentinel.config.schema import AlertingConfig
from sentinel.core.alerts import AlertTransition
from sentinel.core.labels import FailureEvent
from sentinel.training.evaluate import Coverage, average_precision, evaluate, replay_alerts

CONFIG = parse_config({
    "step": "10s", "window": "5m", "horizon": "5m",
    "features": [{"name": "qps"}],
    "failure": {"any": [{"metric": "error_rate", "op": ">=", "value": 0.05}], "for": "30s"},
})
T0 = 1_763_856_000
DAY = 86400
FIRST_COUNTED = T0 + 600  # start - horizon must be >= first_ts + window


def _fire(service: str, ts: int) -> AlertTransition:
    return AlertTransition(service, "firing", ts, 0.9, ts)


def _resolve(service: str, ts: int, started: int) -> AlertTransition:
    return AlertTransition(service, "resolved", ts, 0.1, started)


def _event(service: str, start: int, minutes: int = 5) -> FailureEvent:
    return FailureEvent(service, start, start + minutes * 60)


def test_alert_before_a_failure_is_an_early_detection_with_its_lead_time() -> None:
    start = T0 + DAY // 2
    transitions = [_fire("cart", start - 240), _resolve("cart", start + 400, start - 240),
                   _fire("cart", start - 60)]  # a second firing in the horizon: first one counts

    report = evaluate(CONFIG, {"cart": [_event("cart", start)]}, transitions,
                      {"cart": Coverage(T0, T0 + DAY)})

    cart = report["services"]["cart"]
    assert cart["failures"] == 1 and cart["detected_early"] == 1
    assert cart["early_recall"] == 1.0
    assert cart["median_lead_seconds"] == 240.0
    assert cart["firings"] == 2 and cart["false_alerts"] == 0
    assert report["overall"]["detected_early"] == 1


@pytest.mark.parametrize(("fire_offset", "detected", "false"), [
    (-300, 1, 0),  # exactly one horizon before the start
    (-10, 1, 0),
    (-301, 0, 1),  # earlier than the horizon: neither early nor explained by the failure
    (0, 0, 0),  # at the start: too late to be early, but not false either
    (+300, 0, 0),  # during the failure (it lasts 5 minutes)
    (+301, 0, 1),  # after its end
])
def test_firing_time_decides_early_detection_and_false_alerts(fire_offset: int, detected: int,
                                                              false: int) -> None:
    start = T0 + DAY // 2

    report = evaluate(CONFIG, {"cart": [_event("cart", start)]}, [_fire("cart", start + fire_offset)],
                      {"cart": Coverage(T0, T0 + DAY)})

    cart = report["services"]["cart"]
    assert (cart["detected_early"], cart["false_alerts"]) == (detected, false)
    assert cart["failures"] == 1


def test_false_alerts_are_counted_per_day() -> None:
    firings = [_fire("cart", T0 + 3600 * h) for h in (1, 5, 9, 30)]

    report = evaluate(CONFIG, {}, firings, {"cart": Coverage(T0, T0 + 2 * DAY),
                                            "pay": Coverage(T0, T0 + 2 * DAY)})

    assert report["services"]["cart"]["false_alerts"] == 4
    assert report["services"]["cart"]["false_alerts_per_day"] == 2.0
    assert report["services"]["pay"]["false_alerts_per_day"] == 0.0
    assert report["overall"]["service_days"] == 4.0
    assert report["overall"]["false_alerts_per_service_day"] == 1.0
    assert report["overall"]["early_recall"] is None  # no failures to detect


@pytest.mark.parametrize(("start", "counted"), [
    (FIRST_COUNTED - 10, 0),
    (FIRST_COUNTED, 1),
    (T0 + 60, 0),
])
def test_failures_too_close_to_the_data_start_are_not_counted(start: int, counted: int) -> None:
    report = evaluate(CONFIG, {"cart": [_event("cart", start)]}, [_fire("cart", start - 30)],
                      {"cart": Coverage(T0, T0 + DAY)})

    cart = report["services"]["cart"]
    assert cart["failures"] == counted and cart["detected_early"] == counted
    assert cart["false_alerts"] == 0  # an alert for an uncounted failure is still not false


def test_missed_failure_lowers_recall_and_leads_are_pooled_over_services() -> None:
    start = T0 + DAY // 2
    events = {"cart": [_event("cart", start), _event("cart", start + 3600)],
              "pay": [_event("pay", start)]}
    transitions = [_fire("cart", start - 100), _fire("pay", start - 200)]

    report = evaluate(CONFIG, events, transitions,
                      {"cart": Coverage(T0, T0 + DAY), "pay": Coverage(T0, T0 + DAY)})

    overall = report["overall"]
    assert overall["failures"] == 3 and overall["detected_early"] == 2
    assert overall["early_recall"] == round(2 / 3, 4)
    assert overall["median_lead_seconds"] == 150.0
    assert report["services"]["cart"]["early_recall"] == 0.5
    assert overall["pr_auc"] is None


@pytest.mark.parametrize(("y", "risk", "expected"), [
    ([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], (1 + 2 / 3) / 2),
    ([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], 1.0),
    ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], (1 / 3 + 2 / 4) / 2),
    ([1, np.nan, 0, 1], [0.1, 0.99, 0.5, 0.9], (1 + 2 / 3) / 2),  # no-target windows left out
    # tied scores are one threshold: the order of the rows must not matter
    ([1, 0], [0.5, 0.5], 0.5),
    ([0, 1], [0.5, 0.5], 0.5),
    ([0, 1, 1, 0], [0.9, 0.4, 0.4, 0.4], (2 / 4) * 1.0),
])
def test_average_precision_on_small_known_cases(y: list, risk: list, expected: float) -> None:
    assert average_precision(np.array(y, dtype=float), np.array(risk)) == pytest.approx(expected)


def _reference_average_precision(y: np.ndarray, risk: np.ndarray) -> float:
    """The definition: sum over distinct thresholds of (recall gained) x precision."""
    ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(risk.tolist()), reverse=True):
        chosen = risk >= threshold
        recall = y[chosen].sum() / y.sum()
        ap += (recall - previous_recall) * y[chosen].sum() / chosen.sum()
        previous_recall = recall
    return ap


@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0])),
                min_size=1, max_size=30).filter(lambda rows: any(hit for hit, _ in rows)),
       st.randoms())
def test_average_precision_follows_the_definition_in_any_row_order(rows: list,
                                                                   rnd: random.Random) -> None:
    y = np.array([float(hit) for hit, _ in rows])
    risk = np.array([r for _, r in rows])
    shuffled = rnd.sample(range(len(rows)), len(rows))

    expected = _reference_average_precision(y, risk)

    assert average_precision(y, risk) == pytest.approx(expected)
    assert average_precision(y[shuffled], risk[shuffled]) == pytest.approx(expected)


def test_average_precision_without_positives_is_none() -> None:
    assert average_precision(np.array([0.0, 0.0, np.nan]), np.array([0.1, 0.2, 0.3])) is None


def test_pr_auc_is_reported_when_targets_and_risk_are_given() -> None:
    report = evaluate(CONFIG, {}, [], {}, y=np.array([1.0, 0.0]), risk=np.array([0.9, 0.1]))

    assert report["overall"]["pr_auc"] == 1.0


def test_replay_alerts_runs_one_services_steps_through_the_machine() -> None:
    alerting = AlertingConfig(threshold=0.5, for_steps=2, resolve_threshold=0.3, resolve_steps=1)
    ts = np.arange(T0, T0 + 60, 10)

    out = replay_alerts(alerting, 10, "cart", ts, np.array([0.9, 0.9, 0.9, 0.1, 0.9, 0.9]))

    assert [(t.state, t.ts) for t in out] == [("firing", T0 + 10), ("resolved", T0 + 30)]
