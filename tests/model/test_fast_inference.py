"""The serving runtimes (ONNX Runtime, NumPy) give the Keras model's risks on the same weights."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sentinel.config.load import load_config
from sentinel.core.features import Scaler, tracked_metrics
from sentinel.errors import ModelError
from sentinel.model.artifact import METADATA, load_model
from sentinel.model.fastlstm import TOLERANCE, FastScorer, LstmWeights, available_runtimes, forward
from sentinel.training.keras_model import build_model
from tests.testkit.daemon import BASE_CONFIG, STREAM

CONFIG = load_config(BASE_CONFIG)
RUNTIMES = available_runtimes()


def _stream_windows(n: int) -> np.ndarray:
    """Consecutive raw windows of one simulated service, as the daemon would score them."""
    metrics = tracked_metrics(CONFIG)
    rows = [s for s in STREAM if s["service"] == STREAM[0]["service"]]
    values = np.array([[row["metrics"].get(m, np.nan) for m in metrics] for row in rows], float)
    steps = CONFIG.window_steps
    return np.stack([values[i: i + steps] for i in range(0, len(values) - steps, 7)][:n])


def _extreme_windows() -> np.ndarray:
    """Windows whose scaled input hits the +-20 clip, is NaN or constant."""
    shape = (CONFIG.window_steps, len(tracked_metrics(CONFIG)))
    rng = np.random.default_rng(1)
    spikes = rng.uniform(0, 100, shape)
    spikes[::5] = 1e12
    return np.stack([np.full(shape, 1e300), np.full(shape, -1e300), np.full(shape, np.nan),
                     np.zeros(shape), spikes, rng.uniform(0, 1e9, shape)])


@pytest.fixture(scope="module")
def reference(trained: tuple[Path, float]):
    return load_model(trained[0], CONFIG, runtime="tensorflow").scorer


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fast_runtime_gives_the_keras_risks_on_the_trained_model(
        trained: tuple[Path, float], reference, runtime: str) -> None:
    fast = load_model(trained[0], CONFIG, runtime=runtime).scorer
    windows = np.concatenate([_stream_windows(300), _extreme_windows()])

    with np.errstate(all="ignore"):
        expected, got = reference.score(windows), fast.score(windows)

    assert fast.runtime == runtime and len(got) == len(windows)
    assert np.abs(got - expected).max() <= TOLERANCE
    assert expected.std() > 0.01  # the comparison is not between two constants


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fast_runtime_gives_the_keras_risks_at_the_default_size(runtime: str) -> None:
    """The shipped config's 48/24 units, weights drawn large enough to saturate the gates."""
    import keras

    model = build_model(CONFIG.window_steps, len(CONFIG.features), CONFIG.training.lstm_units)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])
    n_features = len(CONFIG.features)
    scaler = Scaler((0.0,) * n_features, (1.0,) * n_features)
    x = rng.normal(0, 3, (257, CONFIG.window_steps, n_features)).astype(np.float32)
    x[:8] = 20.0
    x[8:16] = -20.0  # the clip edges of Scaler.apply

    expected = keras.ops.convert_to_numpy(model(x, training=False)).reshape(-1)
    got = FastScorer(LstmWeights.from_keras(model), scaler, CONFIG, runtime).score_prepared(x)

    assert np.abs(got - expected).max() <= TOLERANCE


def test_numpy_pass_scores_a_batch_like_its_windows_one_by_one() -> None:
    rng = np.random.default_rng(2)
    model = build_model(12, 3, (6, 5))
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    weights = LstmWeights.from_keras(model)
    x = rng.normal(0, 2, (40, 12, 3)).astype(np.float32)

    single = np.concatenate([forward(weights, x[i: i + 1]) for i in range(len(x))])

    np.testing.assert_allclose(forward(weights, x), single, atol=1e-6)


def test_weights_of_another_architecture_are_refused(trained: tuple[Path, float],
                                                     tmp_path: Path) -> None:
    artifact = Path(shutil.copytree(trained[0], tmp_path / "model"))
    metadata = json.loads((artifact / METADATA).read_text())
    metadata["lstm_units"] = [9, 4]
    (artifact / METADATA).write_text(json.dumps(metadata))
    sums = json.loads((artifact / "checksums.json").read_text())

    sums[METADATA] = hashlib.sha256((artifact / METADATA).read_bytes()).hexdigest()
    (artifact / "checksums.json").write_text(json.dumps(sums))

    with pytest.raises(ModelError, match=r"layers/lstm/cell/vars/0 has shape \(8, 32\)"):
        load_model(artifact, CONFIG)
