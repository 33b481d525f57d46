"""The model artifact: a faithful round trip, and a clear refusal of anything that does not match."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sentinel.config.load import parse_config
from sentinel.config.schema import Config
from sentinel.core.features import Scaler, tracked_metrics
from sentinel.errors import ModelError
from sentinel.model.artifact import CHECKSUMS, METADATA, SCALER, WEIGHTS, load_model, save_model, schema_of
from sentinel.training.keras_model import Scorer, build_model

RAW_CONFIG = {
    "step": "10s",
    "window": "40s",
    "horizon": "20s",
    "features": [{"name": "qps", "transform": "log1p", "center": "window"}, {"name": "p99_ms"}],
    "failure": {"any": [{"metric": "error_rate", "op": ">=", "value": 0.05}], "for": "20s"},
}


def _config(**changes: object) -> Config:
    return parse_config({**RAW_CONFIG, **changes}, source="test.yaml")


CONFIG = _config()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    keras.utils.set_random_seed(3)
    model = build_model(window_steps=4, n_features=2, units=(3, 2))
    scaler = Scaler(mean=(0.0, 150.0), std=(0.5, 80.0))
    metadata = {**schema_of(CONFIG), "metrics": list(tracked_metrics(CONFIG)), "lstm_units": [3, 2]}
    out = tmp_path_factory.mktemp("models") / "model"
    save_model(model, scaler, metadata, out)
    return out


@pytest.fixture
def artifact(saved: Path, tmp_path: Path) -> Path:
    """A private copy of the saved artifact that a test may damage."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def _windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    qps = rng.uniform(10, 50_000, size=(n, 1, 1)) * rng.uniform(0.5, 2.0, size=(n, 4, 1))
    p99 = rng.uniform(50, 3000, size=(n, 4, 1))
    error_rate = rng.uniform(0, 0.1, size=(n, 4, 1))
    return np.concatenate([qps, p99, error_rate], axis=-1)


def test_saved_artifact_has_its_files_and_no_temporary_leftovers(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == sorted([WEIGHTS, SCALER, METADATA, CHECKSUMS])
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_round_trip_gives_the_same_scores(saved: Path) -> None:
    import keras

    keras.utils.set_random_seed(3)
    original = build_model(window_steps=4, n_features=2, units=(3, 2))
    windows = _windows(64)
    loaded = load_model(saved, CONFIG)
    expected = original(loaded.scorer.prepare(windows), training=False).numpy().reshape(-1)

    np.testing.assert_allclose(loaded.scorer.score(windows), expected, atol=1e-6)
    assert loaded.scorer.scaler == Scaler(mean=(0.0, 150.0), std=(0.5, 80.0))
    assert loaded.metadata["lstm_units"] == [3, 2] and loaded.version


def test_saving_again_replaces_the_artifact(saved: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(saved, tmp_path / "model"))
    model = build_model(window_steps=4, n_features=2, units=(3, 2))
    metadata = {**schema_of(CONFIG), "lstm_units": [3, 2]}

    version = save_model(model, Scaler((1.0, 2.0), (3.0, 4.0)), metadata, out)

    loaded = load_model(out, CONFIG)
    assert loaded.version == version
    assert loaded.scorer.scaler == Scaler((1.0, 2.0), (3.0, 4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _rewrite_json(path: Path, change: Callable[[dict], object]) -> None:
    doc = json.loads(path.read_text())
    result = change(doc)
    path.write_text(json.dumps(doc if result is None else result))


def _reseal(artifact: Path) -> None:
    """Recompute checksums.json, as someone hiding a change would."""
    sums = {name: hashlib.sha256((artifact / name).read_bytes()).hexdigest()
            for name in (WEIGHTS, SCALER, METADATA)}
    (artifact / CHECKSUMS).write_text(json.dumps(sums))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: 600])


def _resealed(damage: Callable[[Path], object]) -> Callable[[Path], None]:
    """Damage the artifact, then recompute checksums.json to hide it."""

    def tamper(artifact: Path) -> None:
        damage(artifact)
        _reseal(artifact)

    return tamper


def _set_scaler(doc: object) -> Callable[[Path], None]:
    return lambda a: (a / SCALER).write_text(json.dumps(doc)) and None


TAMPERING: dict[str, tuple[Callable[[Path], None], str]] = {
    "weights bytes modified": (lambda a: _flip_byte(a / WEIGHTS), "checksum of model.weights.h5"),
    "scaler edited": (lambda a: _rewrite_json(a / SCALER, lambda d: d["mean"].__setitem__(0, 9.0)),
                      "checksum of scaler.json"),
    "metadata edited": (lambda a: _rewrite_json(a / METADATA, lambda d: d.update(window_steps=5)),
                        "checksum of metadata.json"),
    "weights truncated and checksums resealed": (
        _resealed(lambda a: _truncate(a / WEIGHTS)), "cannot load weights"),
    "weights replaced by junk and checksums resealed": (
        _resealed(lambda a: (a / WEIGHTS).write_bytes(b"not an hdf5 file" * 64)),
        "cannot load weights"),
    "scaler unreadable and checksums resealed": (
        _resealed(_set_scaler({"mean": ["x"]})), "cannot load weights or scaler"),
    "scaler of the wrong width and checksums resealed": (
        _resealed(_set_scaler({"mean": [0.0], "std": [1.0]})), "scaler has 1 inputs"),
    "format version changed and checksums resealed": (
        _resealed(lambda a: _rewrite_json(a / METADATA, lambda d: d.update(format=99))),
        "format 99"),
    "checksums.json not json": (lambda a: (a / CHECKSUMS).write_text("{"), "unreadable"),
    "checksums.json a list": (lambda a: (a / CHECKSUMS).write_text("[]"), "unreadable"),
    "directory missing": (lambda a: shutil.rmtree(a), "does not exist"),
    "weights file missing": (lambda a: (a / WEIGHTS).unlink(), "unreadable"),
    "scaler file missing": (lambda a: (a / SCALER).unlink(), "unreadable"),
    "metadata file missing": (lambda a: (a / METADATA).unlink(), "unreadable"),
    "checksums file missing": (lambda a: (a / CHECKSUMS).unlink(), "unreadable"),
}


@pytest.mark.parametrize(("tamper", "message"), TAMPERING.values(), ids=TAMPERING.keys())
def test_damaged_artifact_is_refused_with_a_clear_message(artifact: Path, tamper: Callable,
                                                          message: str) -> None:
    tamper(artifact)

    with pytest.raises(ModelError, match=message) as refused:
        load_model(artifact, CONFIG)

    assert str(artifact) in str(refused.value)


def test_metadata_that_is_not_an_object_is_refused(artifact: Path) -> None:
    (artifact / METADATA).write_text("[1, 2]")
    _reseal(artifact)

    with pytest.raises(ModelError):
        load_model(artifact, CONFIG)


FEATURES = RAW_CONFIG["features"]
MISMATCH = {
    "features reordered": ({"features": [FEATURES[1], FEATURES[0]]}, "features"),
    "feature renamed": ({"features": [FEATURES[0], {"name": "p95_ms"}]}, "features"),
    "feature transform differs": ({"features": [{"name": "qps"}, FEATURES[1]]}, "features"),
    "feature added": ({"features": [*FEATURES, {"name": "cpu"}]}, "features"),
    "step differs": ({"step": "5s"}, "step_seconds"),
    "window differs": ({"window": "50s"}, "window_steps"),
    "horizon differs": ({"horizon": "30s"}, "horizon_seconds"),
}


@pytest.mark.parametrize(("changes", "key"), MISMATCH.values(), ids=MISMATCH.keys())
def test_model_that_does_not_match_the_config_is_refused(saved: Path, changes: dict,
                                                         key: str) -> None:
    with pytest.raises(ModelError, match=f"does not match config test.yaml: {key} is"):
        load_model(saved, _config(**changes))


def test_a_different_alerting_or_failure_rule_still_loads(saved: Path) -> None:
    config = _config(alerting={"threshold": 0.9, "resolve_threshold": 0.2},
                     failure={"all": [{"metric": "error_rate", "op": ">", "value": 0.2}]})

    assert load_model(saved, config).version


@pytest.fixture(scope="module")
def scorer(saved: Path) -> Scorer:
    return load_model(saved, CONFIG).scorer


@pytest.mark.parametrize("n", [1, 1000])
def test_batch_scores_equal_one_at_a_time_scores(scorer: Scorer, n: int) -> None:
    windows = _windows(n, seed=n)

    batch = scorer.score(windows)
    single = np.concatenate([scorer.score(windows[i: i + 1]) for i in range(n)])

    assert batch.shape == (n,)
    np.testing.assert_allclose(batch, single, atol=1e-6, rtol=0)
    assert ((batch >= 0) & (batch <= 1)).all()
    if n > 1:
        assert batch.std() > 0  # the scores depend on the input


def test_empty_batch_scores_nothing(scorer: Scorer) -> None:
    assert scorer.score(np.zeros((0, 4, 3))).shape == (0,)


EXTREME = {
    "all NaN": np.full((4, 3), np.nan),
    "huge": np.full((4, 3), 1e308),
    "huge negative": np.full((4, 3), -1e308),
    "huge mixed signs": np.array([[1e308, -1e308, 1.0], [-1e308, 1e308, 1.0]] * 2),
    "infinite": np.array([[np.inf, -np.inf, np.nan]] * 4),
    "NaN and huge": np.array([[np.nan, 1e300, 0.0], [1e300, np.nan, 0.0]] * 2),
}


@pytest.mark.parametrize("window", EXTREME.values(), ids=EXTREME.keys())
def test_extreme_window_gives_a_finite_risk(scorer: Scorer, window: np.ndarray) -> None:
    with np.errstate(all="ignore"):
        (risk,) = scorer.score(window[None])

    assert np.isfinite(risk) and 0.0 <= risk <= 1.0
