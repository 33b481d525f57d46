"""The two-layer LSTM classifier's artifact on disk: save, verify, load.

A model directory holds ``model.weights.h5`` (weights only), ``scaler.json``,
``metadata.json`` (feature names and order with their transforms, step, window, horizon,
training range, validation figures, version, and the context channels the model expects:
``context`` / ``context_channels``, see `sentinel.core.context`) and ``checksums.json``
(SHA-256 of the three), written to a temporary directory and renamed into place
(`sentinel.atomic.atomic_dir`).
The architecture lives in `sentinel.training.keras_model.build_model`; loading reads the
weights as plain arrays (h5py) into it, so nothing from the artifact is ever executed.
Serving uses `sentinel.model.fastlstm.FastScorer` (ONNX Runtime or NumPy: no TensorFlow in
the daemon); ``runtime="tensorflow"`` loads into the Keras model instead, the reference.
Loading refuses a directory whose checksums or metadata do not match, with a message that
says what differs.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel.atomic import atomic_dir
from sentinel.config.schema import AlertingConfig, Config
from sentinel.core.context import ContextLayout
from sentinel.core.features import Scaler
from sentinel.errors import ModelError
from sentinel.model.fastlstm import FastScorer, WindowScorer, read_weights

FORMAT_VERSION = 1
WEIGHTS, SCALER = "model.weights.h5", "scaler.json"
METADATA, CHECKSUMS = "metadata.json", "checksums.json"


def schema_of(config: Config) -> dict[str, Any]:
    """What a model must agree on with the config it serves."""
    return {
        "features": [{"name": f.name, "transform": f.transform, "center": f.center}
                     for f in config.features],
        "step_seconds": config.step_seconds,
        "window_steps": config.window_steps,
        "horizon_seconds": config.horizon_seconds,
    }


@dataclass(frozen=True)
class LoadedModel:
    path: Path
    metadata: dict[str, Any]
    scorer: WindowScorer

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    def alerting(self, config: Config) -> AlertingConfig:
        """The config's alerting with "auto" thresholds taken from this model."""
        return config.alerting.resolved(self.metadata.get("operating_threshold"))

    def written_ts(self) -> float:
        """When the artifact was written: from its version (20251124T101500Z-...) or its file."""
        try:
            return float(calendar.timegm(time.strptime(self.version.split("-")[0],
                                                       "%Y%m%dT%H%M%SZ")))
        except ValueError:
            return os.path.getmtime(self.path / METADATA)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(keras_model: Any, scaler: Scaler, metadata: dict[str, Any], out: Path) -> str:
    """Write the artifact to a temporary sibling directory and rename it into place."""
    out = Path(out)
    if (out / "versions").is_dir() and (out / "current").exists():
        raise ModelError(f"{out} is a model registry: writing a model over it would delete every "
                         "version. Train into a new directory and `sentinel models promote` it")
    with atomic_dir(out) as tmp:
        keras_model.save_weights(tmp / WEIGHTS)
        (tmp / SCALER).write_text(json.dumps(scaler.to_json(), indent=1))
        version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + _sha256(tmp / WEIGHTS)[:8]
        metadata = {"format": FORMAT_VERSION, "version": version, **metadata}
        (tmp / METADATA).write_text(json.dumps(metadata, indent=1, sort_keys=True))
        sums = {name: _sha256(tmp / name) for name in (WEIGHTS, SCALER, METADATA)}
        (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1))
    return version


def verify_artifact(path: Path, config: Config) -> dict[str, Any]:
    """Checksums and schema; returns the metadata or raises ModelError saying what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist (train one with `sentinel train`)")
    try:
        sums = json.loads((path / CHECKSUMS).read_text())
        for name in (WEIGHTS, SCALER, METADATA):
            if _sha256(path / name) != sums.get(name):
                raise ModelError(f"model {path}: checksum of {name} does not match {CHECKSUMS}; "
                                 "the artifact is corrupt or was modified, retrain or restore it")
        metadata = json.loads((path / METADATA).read_text())
        if not isinstance(metadata, dict):
            raise ModelError(f"model {path}: {METADATA} is not a JSON object")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"model {path} is unreadable: {exc}") from exc
    if metadata.get("format") != FORMAT_VERSION:
        raise ModelError(f"model {path}: format {metadata.get('format')!r}, "
                         f"this Sentinel reads format {FORMAT_VERSION}")
    expected = schema_of(config)
    for key, want in expected.items():
        if metadata.get(key) != want:
            raise ModelError(f"model {path} does not match config {config.source}: {key} is "
                             f"{metadata.get(key)!r} in the model but {want!r} in the config")
    return metadata


def load_model(path: str | Path, config: Config, runtime: str | None = None) -> LoadedModel:
    """Verify and load an artifact; `runtime` is "onnxruntime" or "numpy" (FastScorer; default:
    the fastest installed) or "tensorflow" (the Keras model, the reference)."""
    path = Path(path)
    metadata = verify_artifact(path, config)
    try:
        scaler = Scaler.from_json(json.loads((path / SCALER).read_text()))
        expected = len(config.features) * (2 if scaler.deviation else 1)
        if scaler.inputs != expected:
            raise ModelError(f"scaler has {scaler.inputs} inputs, the config's "
                             f"{len(config.features)} features make {expected}")
        units = tuple(metadata["lstm_units"])
        units = (int(units[0]), int(units[1]))
        context = ContextLayout.from_metadata(metadata)
        inputs = scaler.inputs + context.width
        if runtime == "tensorflow":
            from sentinel.training.keras_model import build_model

            keras_model = build_model(config.window_steps, inputs, units)
            keras_model.load_weights(path / WEIGHTS)
        else:
            weights = read_weights(path / WEIGHTS, inputs, units)
    except ModelError as exc:
        raise ModelError(f"model {path}: {exc}") from exc
    except Exception as exc:  # h5py/keras raise a zoo of types for a bad file
        raise ModelError(f"model {path}: cannot load weights or scaler: {exc}") from exc
    if runtime == "tensorflow":
        from sentinel.training.keras_model import Scorer

        return LoadedModel(path, metadata, Scorer(keras_model, scaler, config, context))
    return LoadedModel(path, metadata, FastScorer(weights, scaler, config, runtime,
                                                  context=context))
