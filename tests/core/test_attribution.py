"""Occlusion attribution (sentinel.core.attribution) and its place in the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sentinel.config.load import parse_config
from sentinel.core.alerts import AlertTransition
from sentinel.core.attribution import Attributor, Driver, occluded
from sentinel.core.pipeline import Pipeline
from sentinel.core.samples import Sample
from sentinel.sinks.base import alert_annotations
from sentinel.sinks.outbox import transition_from_json, transition_to_json

NAMES = ("qps", "p99_ms", "error_rate", "cpu")
T0 = 1_763_942_400


class LatencyModel:
    """Risk from how far the last p99 is above the window's first step (a cause we know)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def score(self, windows: np.ndarray) -> np.ndarray:
        self.calls.append(len(windows))
        lift = windows[:, -1, 1] - windows[:, 0, 1]
        return np.clip(0.1 + lift / 1000.0, 0.0, 1.0) + 0.001 * windows[:, -1, 3]


def _windows() -> np.ndarray:
    rng = np.random.default_rng(1)
    w = np.stack([rng.normal(100, 1, 30), rng.normal(200, 5, 30), rng.normal(0.01, 0.001, 30),
                  rng.normal(0.4, 0.01, 30)], axis=1)[None]
    w[0, -6:, 1] = [300, 400, 500, 600, 700, 800]  # p99 climbs over the last minute
    return w


def test_occluded_replaces_one_feature_per_row_with_its_normal() -> None:
    w = _windows()
    median = np.median(w, axis=1)
    rows = occluded(w, 4, median)
    assert rows.shape == (4, 30, 4)
    for j in range(4):
        assert np.all(rows[j, :, j] == median[0, j])
        others = [k for k in range(4) if k != j]
        np.testing.assert_array_equal(rows[j][:, others], w[0][:, others])


def test_the_metric_that_raised_the_risk_ranks_first_and_is_told_in_words() -> None:
    model = LatencyModel()
    w = _windows()
    risks = model.score(w)
    [drivers] = Attributor(NAMES, 10, top=3).explain(model, w, risks)
    assert model.calls == [1, 4], "one batched call of F occluded windows"
    assert drivers[0].metric == "p99_ms"
    assert drivers[0].contribution == pytest.approx(risks[0] - 0.1 - 0.001 * w[0, -1, 3], abs=0.05)
    assert drivers[0].z > 10 and drivers[0].trend == "rising"
    assert drivers[0].away_seconds == 60
    assert drivers[0].text.startswith("p99_ms: ") and "sd above this service's normal, rising " \
        "for 60 s" in drivers[0].text
    assert all(d.metric != "error_rate" for d in drivers), "no risk carried: not a driver"


def test_a_driver_survives_its_json_and_bad_json_is_refused() -> None:
    driver = Driver("p99_ms", 0.42, 4.1, 180, "rising")
    assert driver.text == "p99_ms: 4.1 sd above this service's normal, rising for 3 min"
    assert Driver.from_json(json.loads(json.dumps(driver.to_json()))) == driver
    with pytest.raises(ValueError, match="not a driver"):
        Driver.from_json({"metric": "p99_ms", "contribution": "x", "z": 1, "away_seconds": 0,
                          "trend": "rising"})
    transition = AlertTransition("cart", "firing", T0, 0.9, T0, drivers=(driver,))
    assert transition_from_json(json.loads(json.dumps(transition_to_json(transition)))) == transition
    assert transition.to_json()["drivers"] == [driver.to_json()]
    assert "drivers" not in AlertTransition("cart", "resolved", T0, 0.1, T0).to_json()


def test_annotations_say_why_in_words_and_as_json() -> None:
    drivers = (Driver("p99_ms", 0.42, 4.1, 180, "rising"), Driver("cpu", 0.1, -2.5, 60, "falling"))
    notes = alert_annotations(AlertTransition("cart", "firing", T0, 0.9, T0, drivers=drivers))
    assert notes["summary"] == ("cart is likely to fail soon (failure risk 0.90); mostly p99_ms: "
                                "4.1 sd above this service's normal, rising for 3 min")
    assert "- cpu: 2.5 sd below this service's normal, falling for 60 s (carries 0.1 of" \
        in notes["description"]
    assert [d["metric"] for d in json.loads(notes["drivers"])] == ["p99_ms", "cpu"]


CONFIG = parse_config({
    "step": "10s", "window": "60s", "horizon": "20s",
    "features": [{"name": n} for n in NAMES],
    "failure": {"any": [{"metric": "error_rate", "op": ">=", "value": 0.5}], "for": "20s"},
    "alerting": {"threshold": 0.5, "for_steps": 2, "resolve_steps": 2, "drivers": 2,
                 "drivers_refresh": "30s"},
    "stream": {"allowed_lateness": "0s"},
})


def _stream(services: int, steps: int, climb: tuple[int, int]) -> list[Sample]:
    """Steady services; service s0's p99 climbs between steps climb[0] and climb[1]."""
    samples = []
    for step in range(steps):
        for s in range(services):
            p99 = 200.0
            if s == 0 and climb[0] <= step < climb[1]:
                p99 += 150.0 * (step - climb[0] + 1)
            samples.append(Sample(f"s{s}", T0 + 10 * step + 1,
                                  {"qps": 100.0 + step % 3, "p99_ms": p99 + step % 2,
                                   "error_rate": 0.01, "cpu": 0.4}))
    return samples


def _run(samples: list[Sample], chunk: int) -> tuple[list[AlertTransition], list[AlertTransition],
                                                     LatencyModel]:
    model = LatencyModel()
    pipeline = Pipeline(CONFIG, model)
    results = [pipeline.process(samples[i: i + chunk]) for i in range(0, len(samples), chunk)]
    results.append(pipeline.flush())
    return ([t for r in results for t in r.transitions], [t for r in results for t in r.refreshed],
            model)


def test_the_pipeline_explains_firings_and_refreshes_them_while_firing_only() -> None:
    samples = _stream(5, 40, (10, 22))
    transitions, refreshed, model = _run(samples, len(samples))
    firing = [t for t in transitions if t.state == "firing"]
    assert [t.service for t in firing] == ["s0"]
    assert firing[0].drivers and firing[0].drivers[0].metric == "p99_ms"
    assert len(firing[0].drivers) <= 2
    assert all(not t.drivers for t in transitions if t.state == "resolved")
    resolved_ts = next(t.ts for t in transitions if t.state == "resolved")
    assert refreshed, "re-explained every drivers_refresh while firing"
    assert all(t.service == "s0" and t.started_ts == firing[0].ts and firing[0].ts + 30 <= t.ts
               < resolved_ts for t in refreshed)
    assert [b - a for a, b in zip([firing[0].ts] + [t.ts for t in refreshed],
                                  [t.ts for t in refreshed], strict=False)] == [30] * len(refreshed)
    explained = sum(n for n in model.calls if n % 4 == 0 and n < 5 * 4)
    assert explained == 4 * (1 + len(refreshed)), "F windows per explanation, nobody else's"


def test_one_poll_at_a_time_gives_the_same_drivers_as_one_batch() -> None:
    """live (small polls) == backtest (chunks): the same drivers for the same stream."""
    samples = _stream(5, 40, (10, 22))
    assert _run(samples, 5)[:2] == _run(samples, len(samples))[:2]


def test_drivers_off_leaves_transitions_bare() -> None:
    from dataclasses import replace

    config = replace(CONFIG, alerting=replace(CONFIG.alerting, drivers=0))
    model = LatencyModel()
    pipeline = Pipeline(config, model)
    results = [pipeline.process(_stream(5, 40, (10, 22))), pipeline.flush()]
    transitions = [t for r in results for t in r.transitions]
    assert transitions and all(not t.drivers for t in transitions)
    assert not any(r.refreshed for r in results)


@pytest.mark.parametrize(("key", "value"), [("drivers", -1), ("drivers", "three"),
                                            ("drivers_refresh", "0s")])
def test_bad_attribution_settings_are_refused_naming_key_and_value(key: str, value: object) -> None:
    from sentinel.errors import ConfigError

    raw = {"step": "10s", "window": "60s", "horizon": "20s", "features": [{"name": "qps"}],
           "failure": {"any": [{"metric": "qps", "op": ">=", "value": 1}]},
           "alerting": {key: value}}
    with pytest.raises(ConfigError, match=f"alerting.{key}") as caught:
        parse_config(raw)
    assert str(value) in str(caught.value)


def test_a_feature_missing_from_the_whole_window_is_no_driver_and_warns_nothing() -> None:
    import warnings

    w = _windows()
    w[0, :, 2] = np.nan  # error_rate never reported
    model = LatencyModel()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [drivers] = Attributor(NAMES, 10, top=4).explain(model, w, model.score(w))
    assert drivers[0].metric == "p99_ms"
    assert "error_rate" not in [d.metric for d in drivers]
