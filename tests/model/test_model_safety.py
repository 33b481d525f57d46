"""Loading a model never executes code from the model directory.

The artifact is weights (HDF5 datasets) and JSON; the architecture comes from `build_model`
in Sentinel's own code. These tests plant things that *would* run code if anything in the
loading path unpickled, imported or deserialised them, and check that nothing ran.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from sentinel.config.load import parse_config
from sentinel.core.features import Scaler, tracked_metrics
from sentinel.errors import ModelError
from sentinel.model.artifact import (
    CHECKSUMS,
    METADATA,
    SCALER,
    WEIGHTS,
    _sha256,
    load_model,
    save_model,
    schema_of,
)
from sentinel.retrain.registry import POINTER, VERSIONS, ModelRegistry
from sentinel.training.keras_model import build_model

SENTINEL = Path(__file__).resolve().parents[2] / "sentinel"
CONFIG = parse_config({
    "step": "10s", "window": "40s", "horizon": "20s",
    "features": [{"name": "qps"}, {"name": "p99_ms"}],
    "failure": {"any": [{"metric": "error_rate", "op": ">=", "value": 0.05}]},
}, source="test.yaml")


class _Plant:
    """Unpickling this creates `marker`: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_model(window_steps=4, n_features=2, units=(3, 2))
    metadata = {**schema_of(CONFIG), "metrics": list(tracked_metrics(CONFIG)), "lstm_units": [3, 2]}
    out = tmp_path_factory.mktemp("models") / "model"
    save_model(model, Scaler(mean=(0.0, 150.0), std=(0.5, 80.0)), metadata, out)
    return out


@pytest.fixture
def booby_trapped(saved: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A valid artifact with code-running files beside it; returns (directory, marker)."""
    model, marker = tmp_path / "model", tmp_path / "EXECUTED"
    shutil.copytree(saved, model)
    payload = f"open({str(marker)!r}, 'w').close()\n"
    for name in ("__init__.py", "sitecustomize.py", "custom_objects.py", "build.py"):
        (model / name).write_text(payload)
    (model / "model.pkl").write_bytes(pickle.dumps(_Plant(marker)))
    (model / "scaler.pkl").write_bytes(pickle.dumps(_Plant(marker)))
    np.save(model / "scaler.npy", np.array([_Plant(marker)], dtype=object), allow_pickle=True)
    # a full Keras model config with a Lambda layer: load_model(safe_mode=False) would run it
    (model / "config.json").write_text(json.dumps({
        "class_name": "Lambda", "config": {"function": {"class_name": "__lambda__",
                                                       "config": {"code": payload}}}}))
    (model / "model.keras").write_bytes(pickle.dumps(_Plant(marker)))
    return model, marker


def test_extra_files_in_the_model_directory_are_never_executed(
        booby_trapped: tuple[Path, Path]) -> None:
    model_dir, marker = booby_trapped
    path_before = list(sys.path)

    loaded = load_model(model_dir, CONFIG)

    assert loaded.scorer.score(np.ones((2, 4, 2))).shape == (2,)
    assert not marker.exists()
    assert sys.path == path_before
    assert not any(str(model_dir) in str(getattr(m, "__file__", "") or "")
                   for m in list(sys.modules.values()))


def _reseal(model_dir: Path) -> None:
    """Recompute the checksums, as an attacker who can write the directory could."""
    sums = {name: _sha256(model_dir / name) for name in (WEIGHTS, SCALER, METADATA)}
    (model_dir / CHECKSUMS).write_text(json.dumps(sums))


@pytest.mark.parametrize("target", [WEIGHTS, SCALER, METADATA])
def test_a_pickle_in_place_of_an_artifact_file_is_refused_not_unpickled(
        booby_trapped: tuple[Path, Path], target: str) -> None:
    model_dir, marker = booby_trapped
    (model_dir / target).write_bytes(pickle.dumps(_Plant(marker)))
    _reseal(model_dir)

    with pytest.raises(ModelError):
        load_model(model_dir, CONFIG)

    assert not marker.exists()


def test_metadata_strings_are_data_not_code(booby_trapped: tuple[Path, Path]) -> None:
    model_dir, marker = booby_trapped
    metadata = json.loads((model_dir / METADATA).read_text())
    metadata["lstm_units"] = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    (model_dir / METADATA).write_text(json.dumps(metadata))
    _reseal(model_dir)

    with pytest.raises(ModelError):
        load_model(model_dir, CONFIG)

    assert not marker.exists()


def test_registry_pointer_cannot_lead_out_of_the_versions_directory(
        saved: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    (registry / VERSIONS).mkdir(parents=True)
    shutil.copytree(saved, tmp_path / "elsewhere")
    (registry / POINTER).write_text(json.dumps({"version": "../../elsewhere", "previous": []}))

    with pytest.raises(ModelError, match="not a version directory name"):
        ModelRegistry(registry).current()


# Patterns that would let a model directory (or any file) run code while loading.
UNSAFE = {
    r"\bimport pickle\b|\bpickle\.load": "pickle",
    r"allow_pickle\s*=\s*True": "np.load with pickles",
    r"\b(keras|models|saving)\.load_model\b|tf\.saved_model\.load": "a full Keras/TF model load",
    r"safe_mode\s*=\s*False|enable_unsafe_deserialization": "unsafe Keras deserialisation",
    r"\byaml\.load\(|yaml\.unsafe_load|Loader\s*=\s*yaml\.(Full|Unsafe)?Loader": "unsafe YAML",
    r"\b(eval|exec)\(|\bmarshal\.loads|import_module\(|spec_from_file_location": "eval/exec/import",
}


def test_no_code_loading_primitive_is_used_anywhere_in_sentinel() -> None:
    found = []
    for path in sorted(SENTINEL.rglob("*.py")):
        text = path.read_text()
        found += [f"{path.name}: {what}" for pattern, what in UNSAFE.items()
                  if re.search(pattern, text)]

    assert found == []
