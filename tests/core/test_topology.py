"""Topology channels: fixed width, neutral when a dependency is missing, a caller held until
its dependencies closed the same step, and the same channels live, in a backtest and in
training, whatever the polls look like."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config.load import parse_config
from sentinel.core.context import ContextLayout
from sentinel.core.features import Scaler, tracked_metrics
from sentinel.core.pipeline import Pipeline
from sentinel.core.samples import Sample
from sentinel.core.topology import (
    DependencySteps,
    Topology,
    aggregate,
    failure_pressure,
    input_names,
    topology_channels,
    topology_problems,
)
from sentinel.model.fastlstm import FastScorer, LstmWeights, expected_shapes
from sentinel.training.dataset import labelled_windows
from sentinel.training.history import label, series_from_buckets
from sentinel.training.topology import SeriesTopology

CONFIG = parse_config({
    "step": "10s", "window": "40s", "horizon": "20s",
    "features": [{"name": "qps", "transform": "none"}, {"name": "p99_ms", "transform": "none"}],
    "failure": {"any": [{"metric": "p99_ms", "op": ">=", "value": 2000}]},
    "alerting": {"threshold": 0.5, "for_steps": 1},
    "stream": {"allowed_lateness": "0s", "dependency_wait": "20s"},
})
TOPOLOGY = Topology.of({"checkout": ["payment", "inventory", "ghost"], "cart": ["inventory"]})
SCALER = Scaler((0.0,) * 4, (1.0,) * 4, ("none", "none"), (1.0, 1.0), deviation=True)
INPUTS = input_names(CONFIG.feature_names, deviation=True)
LAYOUT = ContextLayout.of({"topology": topology_channels(INPUTS)})
T0 = 1_763_942_400


class Recording(FastScorer):
    """A real scorer (random weights) that keeps every model input it was given."""

    def __init__(self) -> None:
        rng = np.random.default_rng(5)
        weights = LstmWeights(*(rng.normal(0, 0.4, s).astype(np.float32)
                                for s in expected_shapes(4 + LAYOUT.width, (4, 3))))
        super().__init__(weights, SCALER, CONFIG, "numpy", context=LAYOUT)
        self.calls: list[np.ndarray] = []

    def score_prepared(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(x)  # the poll's scoring call, then any firing's leave-one-out ones
        return super().score_prepared(x)

    @property
    def last(self) -> np.ndarray:
        """The model input of the poll's scoring call (`calls` is reset per poll)."""
        return self.calls[0]


def _traffic(steps: int = 40) -> list[Sample]:
    """inventory's latency climbs from step 20 and fails at 26; the others stay healthy."""
    samples = []
    for i in range(steps):
        ts = T0 + 10 * i
        for service in ("checkout", "payment", "inventory", "cart"):
            p99 = 100.0 + i
            if service == "inventory" and i >= 20:
                p99 = 100.0 * 1.5 ** (i - 19)
            samples.append(Sample(service, ts, {"qps": 50.0 + (i % 3), "p99_ms": p99}))
    return samples


def _run(samples: list[Sample], chunk: int) -> tuple[dict, dict, int]:
    model = Recording()
    pipeline = Pipeline(CONFIG, model, topology=TOPOLOGY)
    scores: dict[tuple[str, int], float] = {}
    inputs: dict[tuple[str, int], np.ndarray] = {}
    late = 0
    polls = [lambda i=i: pipeline.process(samples[i: i + chunk])
             for i in range(0, len(samples), chunk)]
    for poll in [*polls, pipeline.flush]:
        model.calls.clear()
        result = poll()
        late += result.dependency_late
        for k, score in enumerate(result.scores):  # one scoring call per poll
            scores[score.service, score.ts] = score.risk
            inputs[score.service, score.ts] = model.last[k]
    return scores, inputs, late


def test_channels_have_a_fixed_width_whatever_the_number_of_dependencies() -> None:
    assert len(topology_channels(INPUTS)) == 2 * 4 + 2
    pool = DependencySteps(np.ones((5, 4, 4), np.float32), np.zeros((5, 4), np.float32),
                           np.zeros((5, 4), np.float32))
    one, many = aggregate(pool, np.array([[0]])), aggregate(pool, np.array([[0, 1, 2, 3, 4]]))
    assert one.shape == many.shape == (1, 4, 10)


def test_missing_dependencies_are_neutral_and_the_rest_aggregate() -> None:
    prepared = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 3.0)]).astype(np.float32)
    failing = np.array([[0, 0, 1, 1], [0, 0, 0, 1]], np.float32)
    pressure = np.array([[0.1, 0.2, 1.0, 1.0], [0.0, 0.0, 0.5, 1.0]], np.float32)
    out = aggregate(DependencySteps(prepared, failing, pressure),
                    np.array([[0, 1, -1], [-1, -1, -1]]))
    np.testing.assert_allclose(out[0, :, :4], 3.0)  # max
    np.testing.assert_allclose(out[0, :, 4:8], 2.0)  # mean over the present ones
    np.testing.assert_allclose(out[0, :, 8], [0, 0, 0.5, 1.0])  # failing share
    np.testing.assert_allclose(out[0, :, 9], [0.1, 0.2, 1.0, 1.0])  # max pressure
    assert (out[1] == 0).all()  # no dependency present: neutral


def test_failure_pressure_is_the_distance_to_the_rule() -> None:
    values = np.array([[[10.0, 500.0], [10.0, 4000.0], [10.0, np.nan]]])
    np.testing.assert_allclose(failure_pressure(values, tracked_metrics(CONFIG), CONFIG.failure),
                               [[0.25, 1.0, 0.0]])


@pytest.mark.parametrize(("mapping", "expected"), [
    ({"a": ["a", "b"]}, ["'a' lists itself as a dependency (ignored)"]),
    ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["dependency cycle a -> b -> c -> a"]),
    ({"a": ["b", "c"], "b": ["c"], "x": ["unknown"]}, []),
])
def test_self_dependencies_and_cycles_are_reported(mapping: dict, expected: list[str]) -> None:
    assert topology_problems(mapping) == expected
    assert "a" not in Topology.of(mapping).dependencies("a")


def test_scores_do_not_depend_on_how_the_stream_is_polled() -> None:
    samples = _traffic()
    reference, inputs, late = _run(samples, len(samples))
    assert late == 0 and ("checkout", T0 + 390) in reference
    for chunk in (1, 3, 7, 500):
        scores, _, late = _run(samples, chunk)
        assert late == 0
        assert scores.keys() == reference.keys()
        np.testing.assert_allclose([scores[k] for k in reference], list(reference.values()),
                                   atol=1e-6)
    # inventory's climb reaches checkout's and cart's inputs, not payment's
    width = 4
    before, during = inputs["checkout", T0 + 150], inputs["checkout", T0 + 280]
    assert during[-1, width + 9] == 1.0 and before[-1, width + 9] < 0.1  # dep_max_pressure
    assert during[-1, width + 8] == 0.5  # inventory of payment, inventory (ghost: missing)
    assert inputs["cart", T0 + 280][-1, width + 8] == 1.0
    assert (inputs["payment", T0 + 280][:, width:] == 0).all()


def test_a_caller_waits_for_a_late_dependency_then_scores_as_if_on_time() -> None:
    samples = _traffic()
    reference, _, _ = _run(samples, len(samples))
    # inventory's samples arrive one step (10 s) after everyone else's: within the wait
    delayed = sorted(samples, key=lambda s: s.ts + (10 if s.service == "inventory" else 0))
    model = Recording()
    pipeline = Pipeline(CONFIG, model, topology=TOPOLOGY)
    scores = {}
    for i in range(0, len(delayed), 4):
        result = pipeline.process(delayed[i: i + 4])
        assert result.dependency_late == 0
        scores.update({(s.service, s.ts): s.risk for s in result.scores})
    assert ("checkout", T0 + 300) in scores
    common = [k for k in scores if k in reference]
    np.testing.assert_allclose([scores[k] for k in common], [reference[k] for k in common],
                               atol=1e-6)


@pytest.mark.parametrize("delay_seconds", [30, 60])
def test_a_dependency_later_than_the_wait_is_neutral_and_counted(delay_seconds: int) -> None:
    samples = _traffic()
    _, inputs, _ = _run(samples, len(samples))
    delayed = sorted(samples, key=lambda s: s.ts + (delay_seconds if s.service == "inventory"
                                                    else 0))
    model = Recording()
    pipeline = Pipeline(CONFIG, model, topology=TOPOLOGY)
    late, held, seen = 0, 0, {}
    for i in range(0, len(delayed), 4):
        model.calls.clear()
        result = pipeline.process(delayed[i: i + 4])
        late += result.dependency_late
        held = max(held, pipeline.gate.held)
        seen.update({(s.service, s.ts): model.last[k] for k, s in enumerate(result.scores)})
    assert late > 0
    assert held <= 2 * 3  # checkout and cart hold at most `wait` (2 steps) + the newest
    # checkout waited 2 steps, then scored without inventory: the backtest's checkout saw
    # inventory failing (pressure 1), this one only payment (healthy)
    pressure = 4 + 9
    assert inputs["checkout", T0 + 280][-1, pressure] == 1.0
    assert seen["checkout", T0 + 280][-1, pressure] < 0.1


def test_training_channels_equal_the_pipelines() -> None:
    samples = _traffic()
    model = Recording()
    pipeline = Pipeline(CONFIG, model, topology=TOPOLOGY)
    buckets, context = [], {}
    for poll in (lambda: pipeline.process(samples), pipeline.flush):
        model.calls.clear()
        result = poll()
        buckets += result.buckets
        for k, score in enumerate(result.scores):
            context[score.service, score.ts] = model.last[k][:, 4:]
    labelled = [label(s, CONFIG) for s in series_from_buckets(buckets, 10).values()]
    windows = labelled_windows(labelled, CONFIG)
    rows = np.arange(len(windows.ts))
    built = SeriesTopology(TOPOLOGY, labelled, CONFIG, SCALER).build(windows.batch(CONFIG, rows))
    batch = windows.batch(CONFIG, rows)
    checked = 0
    for i, (service, ts) in enumerate(zip(batch.services, batch.ts.tolist(), strict=True)):
        if (service, ts) in context:
            np.testing.assert_allclose(built[i], context[service, ts], atol=1e-6)
            checked += 1
    assert checked >= 100 and np.abs(built).max() > 0


class PressureModel:
    """Risk = the higher of the caller's own p99 / 2000 and its dependencies' highest failure
    pressure at the last step: a model that a cascade drives, with known answers."""

    context = LAYOUT
    scaler = SCALER

    def prepare(self, windows: np.ndarray) -> np.ndarray:
        return SCALER.prepare(windows, CONFIG.features)

    def score(self, windows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        raise AssertionError("a topology model is scored through prepare + score_prepared")

    def score_prepared(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.maximum(x[:, -1, 1] / 2000, x[:, -1, 4 + 9]), 0, 1)


def test_an_alert_names_the_dependency_that_drove_it() -> None:
    pipeline = Pipeline(CONFIG, PressureModel(), topology=TOPOLOGY)
    transitions = []
    for poll in (lambda: pipeline.process(_traffic()), pipeline.flush):
        transitions += poll().transitions
    firing = {t.service: t for t in transitions if t.state == "firing"}
    assert firing["checkout"].cause_service == "inventory"  # payment is healthy
    assert firing["cart"].cause_service == "inventory"
    assert firing["inventory"].cause_service is None  # its own window fired it
    assert "payment" not in firing
    assert firing["checkout"].to_json()["cause_service"] == "inventory"
    # the drivers rank the dependency with the metrics (issue 17): inventory carries the risk,
    # the healthy payment carries none and is not listed
    top = firing["checkout"].drivers[0]
    assert (top.service, top.metric) == ("inventory", "dependency")
    assert top.contribution > 0.1 and "dependency inventory" in top.text
    assert all(d.service != "payment" for d in firing["checkout"].drivers)
    assert all(d.service is None for d in firing["inventory"].drivers)  # no dependencies


def test_a_dependency_driver_survives_the_outbox_and_reaches_the_annotations() -> None:
    import json

    from sentinel.core.alerts import AlertTransition
    from sentinel.core.attribution import dependency_driver
    from sentinel.sinks.base import alert_annotations
    from sentinel.sinks.outbox import transition_from_json, transition_to_json

    fired = AlertTransition("checkout", "firing", T0, 0.9, T0, "predicted", "inventory",
                            drivers=(dependency_driver("inventory", 0.62),))
    assert transition_from_json(transition_to_json(fired)) == fired
    annotations = alert_annotations(fired)
    assert json.loads(annotations["drivers"])[0]["service"] == "inventory"
    assert "dependency inventory: without its steps the risk falls by 0.62" in annotations["summary"]


def test_cause_service_reaches_the_annotations_and_survives_the_outbox() -> None:
    from sentinel.core.alerts import AlertTransition
    from sentinel.sinks.base import alert_annotations
    from sentinel.sinks.outbox import transition_from_json, transition_to_json

    fired = AlertTransition("checkout", "firing", T0, 0.9, T0, "predicted", "inventory")
    annotations = alert_annotations(fired)
    assert annotations["cause_service"] == "inventory"
    assert "driven by its dependency inventory" in annotations["summary"]
    assert transition_from_json(transition_to_json(fired)) == fired
    plain = AlertTransition("checkout", "firing", T0, 0.9, T0)
    assert "cause_service" not in alert_annotations(plain)
    assert transition_from_json(transition_to_json(plain)) == plain


@pytest.mark.parametrize(("risk", "alone", "each", "expected"), [
    (0.9, 0.2, {"payment": 0.85, "inventory": 0.3}, "inventory"),  # inventory drove it
    (0.9, 0.7, {"payment": 0.85, "inventory": 0.3}, None),  # fires without dependencies too
    (0.9, 0.2, {"b": 0.4, "a": 0.4}, "a"),  # a tie: the first name
    (0.9, 0.2, {}, None),
])
def test_cause_rule(risk: float, alone: float, each: dict, expected: str | None) -> None:
    from sentinel.core.cause import cause_service

    assert cause_service(risk, alone, each, threshold=0.6) == expected


def _two_replicas(samples: list[Sample], chunk: int, stop_publishing_at: int | None = None
                  ) -> tuple[dict, int, int]:
    """Replica A consumes the dependencies (payment, inventory), replica B the callers
    (checkout, cart); after each poll each hands `take_outgoing()` to the other's `receive`
    (what the steps topic carries). A's steps stop reaching B from `stop_publishing_at`."""
    pipelines = {"A": Pipeline(CONFIG, Recording(), topology=TOPOLOGY),
                 "B": Pipeline(CONFIG, Recording(), topology=TOPOLOGY)}
    for pipeline in pipelines.values():
        pipeline.gate.publish = True
    home = {"payment": "A", "inventory": "A", "checkout": "B", "cart": "B"}
    scores: dict[tuple[str, int], float] = {}
    late = held = 0
    for i in range(0, len(samples), chunk):
        results = [pipelines[r].process([s for s in samples[i: i + chunk] if home[s.service] == r])
                   for r in "AB"]
        outgoing = {r: pipelines[r].gate.take_outgoing() for r in "AB"}
        if stop_publishing_at is not None and samples[i].ts >= stop_publishing_at:
            outgoing["A"] = []
        results += [pipelines["B"].receive(outgoing["A"]), pipelines["A"].receive(outgoing["B"])]
        for result in results:
            late += result.dependency_late
            scores.update({(s.service, s.ts): s.risk for s in result.scores})
        held = max(held, pipelines["B"].gate.held)
    return scores, late, held


@pytest.mark.parametrize("chunk", [1, 4])
def test_a_dependency_on_another_replica_scores_as_in_one_process(chunk: int) -> None:
    """Polls of at most one step: the other replica's steps arrive a poll later, well within
    the wait (2 steps). Polls of several steps make the caller run ahead of them by more than
    the wait: then they are late by the documented rule (the next test)."""
    samples = _traffic()
    reference, _, _ = _run(samples, len(samples))
    scores, late, _ = _two_replicas(samples, chunk)
    assert late == 0
    # every window the stream closed live is scored as in one process (the file's last open
    # steps are closed only by the backtest's flush)
    assert ("checkout", T0 + 380) in scores and scores.keys() <= reference.keys()
    assert len(scores) >= len(reference) - 4
    np.testing.assert_allclose([scores[k] for k in scores], [reference[k] for k in scores],
                               atol=1e-6)


def test_steps_that_stop_arriving_are_late_after_the_wait_and_never_stall_the_caller() -> None:
    samples = _traffic()
    stop = T0 + 250
    scores, late, held = _two_replicas(samples, 4, stop_publishing_at=stop)
    callers_after = [k for k in scores if k[0] in ("checkout", "cart") and k[1] >= stop]
    # the callers go on being scored up to their newest closed step minus the wait (20 s)
    assert max(ts for _, ts in callers_after) >= T0 + 380 - 20
    # checkout misses payment and inventory, cart inventory: counted per window and dependency
    assert late >= len([k for k in callers_after if k[0] == "checkout"]) * 2 - 4
    assert held <= 2 * 3
