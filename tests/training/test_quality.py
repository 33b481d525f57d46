"""The quality harness: its figures on hand-made series, and one tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from sentinel.config.load import parse_config
from sentinel.core.alerts import AlertTransition
from sentinel.core.labels import FailureEvent
from sentinel.training import quality
from sentinel.training.evaluate import Coverage, evaluate
from sentinel.training.history import Series, label

ROOT = Path(__file__).resolve().parents[2]

# step 10 s, window 3 steps, horizon 5 steps (50 s), failure: x >= 10 for 1 step
CONFIG = parse_config({
    "step": "10s", "window": "30s", "horizon": "50s",
    "features": [{"name": "x"}],
    "failure": {"any": [{"metric": "x", "op": ">=", "value": 10}], "for": "10s"},
})


def labelled(values: list[float], service: str = "svc", first_ts: int = 0) -> quality.Labelled:
    return label(Series(service, first_ts, 10, np.array(values, dtype=float)[:, None]), CONFIG)


# 100 steps; failures at steps 40-42 and 80-82 (ts 400 and 800); a precursor ramp before the first
QUIET = [1.0] * 100
SERIES = list(QUIET)
SERIES[36:40] = [5.0, 6.0, 7.0, 8.0]
SERIES[40:43] = [12.0, 12.0, 12.0]
SERIES[80:83] = [11.0, 11.0, 11.0]


def test_events_are_onsets_and_counted_after_a_window_and_a_horizon() -> None:
    item = labelled(SERIES)
    assert [(e.start_ts, e.end_ts) for e in item.events] == [(400, 420), (800, 820)]
    truth = quality.truth_of(CONFIG, item)
    assert truth is not None and (truth.first_ts, truth.last_ts) == (0, 990)
    # an event at ts 70 lacks one window (30 s) plus one horizon (50 s) before it
    early = labelled([1.0] * 7 + [20.0] + [1.0] * 20)
    assert quality.counted(CONFIG, quality.truth_of(CONFIG, early)) == []
    assert len(quality.counted(CONFIG, quality.truth_of(CONFIG, labelled([1.0] * 8 + [20.0])))) == 1


def test_failures_split_into_cascades_and_own_by_the_dependencys_onset() -> None:
    from sentinel.core.topology import Topology

    dep = list(QUIET)
    dep[38:41] = [15.0, 15.0, 15.0]  # the dependency fails at 380, 20 s before svc's 400
    truths = {"svc": quality.truth_of(CONFIG, labelled(SERIES)),
              "dep": quality.truth_of(CONFIG, labelled(dep, "dep"))}
    split = quality.by_cause(CONFIG, truths, Topology.of({"svc": ["dep"]}))
    assert [e.start_ts for e in quality.counted(CONFIG, split["cascade"]["svc"])] == [400]
    assert [e.start_ts for e in quality.counted(CONFIG, split["own"]["svc"])] == [800]
    assert [e.start_ts for e in quality.counted(CONFIG, split["own"]["dep"])] == [380]
    episodes = quality.episodes_from_transitions([
        AlertTransition("svc", "firing", 370, 0.9, 370), AlertTransition("svc", "resolved", 380, 0.1, 370)])
    assert quality.grade(CONFIG, split["cascade"], episodes).early_recall == 1.0
    own = quality.grade(CONFIG, split["own"], episodes)
    assert (own.early_recall, own.false_alerts) == (0.0, 0)  # the firing is still excused


def test_relapse_within_a_horizon_is_the_same_event() -> None:
    values = [1.0] * 30 + [12.0, 1.0, 1.0, 1.0, 12.0] + [1.0] * 20
    assert [(e.start_ts, e.end_ts) for e in labelled(values).events] == [(300, 340)]


def test_grade_early_detect_false_and_leads() -> None:
    truths = {"svc": quality.truth_of(CONFIG, labelled(SERIES))}
    episodes = quality.episodes_from_transitions([
        AlertTransition("svc", "firing", 370, 0.9, 370),    # early for 400: lead 30
        AlertTransition("svc", "resolved", 380, 0.1, 370),
        AlertTransition("svc", "firing", 600, 0.9, 600),    # false
        AlertTransition("svc", "resolved", 650, 0.1, 600),
        AlertTransition("svc", "firing", 810, 0.9, 810),    # start + one step: detected, not early
    ])
    figures = quality.grade(CONFIG, truths, episodes)
    assert (figures.failures, figures.detected_early, figures.detected) == (2, 1, 2)
    assert (figures.early_recall, figures.detect_recall) == (0.5, 1.0)
    assert figures.median_lead_seconds == 30.0 and figures.firings == 3
    assert figures.false_alerts == 1
    assert figures.service_days == round(990 / 86400, 3)


def test_an_alert_still_firing_at_the_failure_is_a_detection() -> None:
    truths = {"svc": quality.truth_of(CONFIG, labelled(SERIES))}
    long_before = quality.episodes_from_transitions([AlertTransition("svc", "firing", 200, 0.9, 200)])
    figures = quality.grade(CONFIG, truths, long_before)
    # fired 200 s before the first failure (outside its horizon): neither early nor excused,
    # but still firing at both onsets
    assert (figures.detected_early, figures.detected, figures.false_alerts) == (0, 2, 1)
    resolved_early = quality.episodes_from_transitions([
        AlertTransition("svc", "firing", 200, 0.9, 200),
        AlertTransition("svc", "resolved", 410, 0.1, 200)])  # resolved at start + one step
    assert quality.grade(CONFIG, truths, resolved_early).detected == 0


def test_grade_agrees_with_sentinel_evaluate() -> None:
    item = labelled(SERIES)
    rng = np.random.default_rng(3)
    ts = item.series.ts[2:]
    risk = rng.random(len(ts))
    for threshold in (0.5, 0.8, 0.95):
        transitions = quality.replay_alerts(CONFIG.alerting.resolved(threshold), 10, "svc", ts, risk)
        ours = quality.grade(CONFIG, {"svc": quality.truth_of(CONFIG, item)},
                             quality.episodes_from_transitions(transitions))
        theirs = evaluate(CONFIG, {"svc": item.events}, transitions,
                          {"svc": Coverage(0, 990)})["overall"]
        assert ours.early_recall == theirs["early_recall"]
        assert ours.false_alerts == theirs["false_alerts"]
        assert ours.median_lead_seconds == theirs["median_lead_seconds"]


def test_static_episodes_fire_after_the_for_duration_and_resolve_when_it_stops() -> None:
    holds = np.array([0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1], dtype=bool)
    ts = np.arange(len(holds)) * 10
    ep = quality.static_episodes(holds, ts, for_steps=3)
    assert ep.fire_ts.tolist() == [30.0, 90.0] and ep.resolve_ts.tolist() == [40.0, np.inf]
    assert quality.static_episodes(holds, ts, 1).fire_ts.tolist() == [10.0, 50.0, 70.0]


def test_static_for_duration_is_30_seconds_in_steps() -> None:
    assert quality.static_for_steps(CONFIG) == 3
    slow = parse_config({**_raw(), "step": "5m", "window": "10m", "horizon": "5m"})
    assert quality.static_for_steps(slow) == 1


def test_tune_static_finds_the_precursor_and_its_direction() -> None:
    # the precursor is a *drop* of y two steps before x fails: only `y <= low` warns early
    config = parse_config({**_raw(), "features": [{"name": "x"}, {"name": "y"}]})
    x = np.ones(400)
    y = np.full(400, 50.0) + np.tile([0.0, 1.0, -1.0, 0.5], 100)
    for start in (100, 200, 300):
        x[start] = 20.0
        y[start - 6: start] = 0.0
    item = label(Series("svc", 0, 10, np.stack([x, y], axis=1)), config)
    train = {"svc": item}
    rule, scale, figures = quality.tune_static(config, train, quality.truths_of(config, train))
    assert (rule.metric, rule.direction) == ("y", "<=")
    assert figures.early_recall == 1.0 and figures.false_alerts == 0
    assert figures.median_lead_seconds == 40.0  # fires at the 3rd low step: 6 - 2 steps ahead
    assert scale.median["svc"][1] == pytest.approx(50.0, abs=1.0)


def test_robust_z_uses_each_services_training_median_and_mad() -> None:
    a = label(Series("a", 0, 10, np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])), CONFIG)
    scale = quality.RobustScale.fit({"a": a})
    assert scale.median["a"][0] == 3.0
    assert scale.scale["a"][0] == pytest.approx(1.4826 * 1.0)
    z = scale.apply("a", np.array([[3.0 + 1.4826]]))
    assert z[0, 0] == pytest.approx(1.0)


def test_best_recall_at_reads_the_curve_within_the_budget() -> None:
    curve = [quality.CurvePoint(0.1, 3.0, 0.9, 1.0), quality.CurvePoint(0.5, 0.9, 0.4, 0.8),
             quality.CurvePoint(0.7, 0.4, 0.2, 0.5), quality.CurvePoint(0.9, 0.0, 0.0, 0.0)]
    assert quality.best_recall_at(curve, 1.0) == 0.4
    assert quality.best_recall_at(curve, 0.5) == 0.2
    assert quality.best_recall_at(curve[:1], 0.5) == 0.0


def test_model_curve_replays_the_alert_machine_per_threshold() -> None:
    item = labelled(SERIES)
    truths = {"svc": quality.truth_of(CONFIG, item)}
    ts = item.series.ts
    risk = np.zeros(len(ts))
    risk[33:40] = 0.9  # warns early of the first failure: 3 steps to fire (ts 350), lead 50
    risk[90:96] = 0.6  # a false alert at 0.5 (after the first alert's cooldown), none at 0.7
    curve = quality.model_curve(CONFIG, truths, {"svc": (ts, risk)}, [0.5, 0.7, 0.95])
    assert [(p.early_recall, p.detect_recall) for p in curve] == [(0.5, 0.5), (0.5, 0.5), (0.0, 0.0)]
    per_day = 1 / (990 / 86400)
    assert curve[0].false_alerts_per_service_day == pytest.approx(per_day, rel=1e-3)
    assert curve[1].false_alerts_per_service_day == 0.0


def _raw() -> dict:
    return {"step": "10s", "window": "30s", "horizon": "50s", "features": [{"name": "x"}],
            "failure": {"any": [{"metric": "x", "op": ">=", "value": 10}], "for": "10s"}}


@pytest.mark.slow
def test_quick_harness_run_end_to_end(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks" / "quality.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "quality.json"
    markdown = tmp_path / "QUALITY.md"
    markdown.write_text(f"# Q\n\nkept\n\n{bench.BEGIN}\nold\n{bench.END}\n\ntail\n")
    # test seed 2: its 2 services x 1 day hold failures (seeds 11-13 at this size hold none)
    assert bench.main(["--quick", "--sets", "a", "--seeds", "2", "--out-json", str(out),
                       "--markdown", str(markdown), "--plots", str(tmp_path / "plots")]) == 0
    doc = json.loads(out.read_text())
    assert doc["meta"]["quick"] is True
    [run] = doc["results"]
    assert run["set"] == "a" and run["test"] == "seed2"
    model, static = run["model"], run["static"]
    assert model["failures"] >= 1
    for figure in ("early_recall", "detect_recall"):
        assert 0.0 <= model[figure] <= 1.0 and 0.0 <= static["test"][figure] <= 1.0
    assert model["detect_recall"] >= model["early_recall"]
    # our grading of the backtest's own alerts agrees with the backtest's report
    for key in ("failures", "detected_early", "false_alerts", "firings"):
        assert model[key] == run["backtest_report_model"][key]
    assert static["rule"]["metric"] in {"qps", "p99_ms", "error_rate", "cpu"}
    assert static["train"]["false_alerts_per_service_day"] <= 1.0
    for curve in ("model_curve", "static_curve"):
        assert len(run[curve]) >= 10
        assert min(p["false_alerts_per_service_day"] for p in run[curve]) == 0.0
    assert set(run["at_equal_false_alerts"]) == {"0.5", "1.0"}
    text = markdown.read_text()
    assert "kept" in text and "tail" in text and "old" not in text
    assert "model early recall at <= 1 false/day" in text
    assert (tmp_path / "plots" / "quality-a.png").stat().st_size > 1000


def test_split_by_sale_phase_counts_events_and_false_alerts_where_they_happen() -> None:
    config = parse_config({"step": "10s", "window": "60s", "horizon": "60s",
                           "features": [{"name": "qps"}],
                           "failure": {"any": [{"metric": "qps", "op": ">=", "value": 1}]}})
    t0 = 1_763_942_400
    sales = [(t0 + 10_000, True), (t0 + 20_000, False)]
    events = [FailureEvent("a", t0 + 10_100, t0 + 10_200), FailureEvent("a", t0 + 20_500, t0 + 20_600),
              FailureEvent("a", t0 + 40_000, t0 + 40_100)]
    truths = {"a": quality.Truth(events, t0, t0 + 50_000)}
    fire = np.array([t0 + 10_050, t0 + 9_500, t0 + 20_000, t0 + 30_000], float)  # early, 3 false
    episodes = {"a": quality.Episodes(fire, fire + 30)}
    split = quality.split_by_phase(config, truths, episodes, sales)
    assert split["announced_sale"] == {"events": 1, "early": 1, "false_alerts": 1, "early_recall": 1.0}
    assert split["unannounced_promotion"] == {"events": 1, "early": 0, "false_alerts": 1,
                                              "early_recall": 0.0}
    assert split["quiet"] == {"events": 1, "early": 0, "false_alerts": 1, "early_recall": 0.0}
    assert quality.sale_phase(t0 + 10_000 - 601, sales) == "quiet"
