"""Context channels (sentinel.core.context): the layout a model records, neutral channels for
a provider that is not there, and the pipeline feeding a model exactly what it records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sentinel.config.load import parse_config
from sentinel.core.context import ContextBatch, ContextLayout, with_context
from sentinel.core.features import Scaler, tracked_metrics
from sentinel.core.pipeline import Pipeline
from sentinel.core.samples import Sample
from sentinel.errors import ModelError
from sentinel.model.fastlstm import FastScorer, LstmWeights, expected_shapes

CONFIG = parse_config({
    "step": "10s", "window": "40s", "horizon": "20s",
    "features": [{"name": "qps"}, {"name": "p99_ms"}],
    "failure": {"any": [{"metric": "p99_ms", "op": ">=", "value": 2000}]},
    "alerting": {"threshold": 0.5, "for_steps": 1},
    "stream": {"allowed_lateness": "0s"},
})


class StepClock:
    """A provider whose channels are the step's ts (in hours since 0) and a constant 1."""

    name = "calendar"

    def channels(self) -> tuple[str, ...]:
        return ("hours", "one")

    def build(self, batch: ContextBatch) -> np.ndarray:
        ts = batch.step_ts().astype(np.float32) / 3600
        return np.stack([ts, np.ones_like(ts)], axis=-1)


class Recorder:
    """A model that records the context each scoring call got."""

    def __init__(self, layout: ContextLayout) -> None:
        self.context = layout
        self.calls: list[np.ndarray | None] = []

    def score(self, windows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        self.calls.append(context)
        return np.zeros(len(windows))


def test_layout_round_trips_through_metadata_in_provider_order() -> None:
    layout = ContextLayout.of({"calendar": ("c",), "topology": ("a", "b")})
    assert layout.providers == ("topology", "calendar") and layout.width == 3
    assert ContextLayout.from_metadata(layout.to_metadata()) == layout
    assert ContextLayout.from_metadata({}) == ContextLayout()  # a model from before


def test_malformed_metadata_names_the_provider() -> None:
    with pytest.raises(ModelError, match="'topology'"):
        ContextLayout.from_metadata({"context": ["topology"], "context_channels": {}})


def test_a_recorded_provider_that_is_not_configured_is_neutral_zeros() -> None:
    layout = ContextLayout.of({"topology": ("a", "b"), "calendar": ("hours", "one")})
    batch = ContextBatch(("x", "y"), np.array([3600, 7200]), 10, 4)
    context = layout.build(batch, {"calendar": StepClock()})
    assert context is not None and context.shape == (2, 4, 4) and context.dtype == np.float32
    assert (context[..., :2] == 0).all()  # topology: not configured
    np.testing.assert_allclose(context[1, :, 2], (7200 + 10 * np.arange(-3, 1)) / 3600, rtol=1e-6)
    assert ContextLayout().build(batch, {"calendar": StepClock()}) is None


def test_a_provider_of_the_wrong_width_is_refused() -> None:
    layout = ContextLayout.of({"calendar": ("hours",)})
    with pytest.raises(ValueError, match="calendar"):
        layout.build(ContextBatch(("x",), np.array([0]), 10, 4), {"calendar": StepClock()})


def _scorer(layout: ContextLayout) -> FastScorer:
    rng = np.random.default_rng(1)
    weights = LstmWeights(*(rng.normal(0, 0.3, shape).astype(np.float32)
                            for shape in expected_shapes(2 + layout.width, (3, 2))))
    return FastScorer(weights, Scaler((0.0, 0.0), (1.0, 1.0)), CONFIG, "numpy", context=layout)


def test_scorer_concats_the_context_after_the_prepared_windows() -> None:
    layout = ContextLayout.of({"calendar": ("hours", "one")})
    scorer = _scorer(layout)
    windows = np.random.default_rng(2).uniform(0, 3, (5, 4, len(tracked_metrics(CONFIG))))
    context = np.random.default_rng(3).uniform(-1, 1, (5, 4, 2)).astype(np.float32)
    expected = scorer.score_prepared(with_context(scorer.prepare(windows), context))
    np.testing.assert_allclose(scorer.score(windows, context), expected)
    assert not np.allclose(scorer.score(windows), expected)  # the context matters ...
    np.testing.assert_allclose(scorer.score(windows),  # ... and None means neutral zeros
                               scorer.score(windows, np.zeros((5, 4, 2), np.float32)))


def test_pipeline_feeds_the_model_the_context_it_records() -> None:
    model = Recorder(ContextLayout.of({"calendar": ("hours", "one")}))
    pipeline = Pipeline(CONFIG, model, context={"calendar": StepClock()})
    samples = [Sample("svc", 3600 + 10 * i, {"qps": 1.0, "p99_ms": 5.0}) for i in range(6)]
    pipeline.process(samples)
    (context,) = [c for c in model.calls if c is not None]
    # windows end at the 4th and 5th step (the 6th is still open)
    np.testing.assert_allclose(context[:, -1, 0], np.array([3630, 3640]) / 3600, rtol=1e-6)
    assert (context[..., 1] == 1).all()


def test_pipeline_gives_a_model_without_context_none() -> None:
    model = Recorder(ContextLayout())
    pipeline = Pipeline(CONFIG, model, context={"calendar": StepClock()})
    pipeline.process([Sample("svc", 10 * i, {"qps": 1.0, "p99_ms": 5.0}) for i in range(6)])
    assert model.calls and all(c is None for c in model.calls)


def test_loaded_model_records_its_context(tmp_path: Path) -> None:
    import keras

    from sentinel.model.artifact import load_model, save_model, schema_of
    from sentinel.training.keras_model import build_model

    layout = ContextLayout.of({"calendar": ("hours", "one")})
    keras.utils.set_random_seed(3)
    model = build_model(window_steps=4, n_features=4, units=(3, 2))
    metadata = {**schema_of(CONFIG), "metrics": list(tracked_metrics(CONFIG)),
                "lstm_units": [3, 2], **layout.to_metadata()}
    save_model(model, Scaler((0.0, 0.0), (1.0, 1.0)), metadata, tmp_path / "m")
    loaded = load_model(tmp_path / "m", CONFIG)
    reference = load_model(tmp_path / "m", CONFIG, runtime="tensorflow")
    assert loaded.scorer.context == layout and loaded.scorer.inputs == 4
    windows = np.random.default_rng(2).uniform(0, 3, (3, 4, len(tracked_metrics(CONFIG))))
    context = np.ones((3, 4, 2), np.float32)
    np.testing.assert_allclose(loaded.scorer.score(windows, context),
                               reference.scorer.score(windows, context), atol=1e-5)
