"""From raw windows to model input: gap filling, per-feature transforms, scaling.

One global model serves services whose traffic differs by orders of magnitude, so nothing
here depends on a service's identity: ``log1p`` turns ratios into differences, and
``center: window`` subtracts the window's own mean, so 50 qps doubling and 50,000 qps
doubling look the same. The final standardisation (`Scaler`) is fitted on training windows
only and saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sentinel.config.schema import Config, FeatureSpec

LOG_EPSILON = 1e-4  # `log` transform: resolves error rates down to ~0.01 %


def tracked_metrics(config: Config) -> tuple[str, ...]:
    """Metrics kept per bucket: the features in model order, then failure-rule-only metrics."""
    names = list(config.feature_names)
    for condition in config.failure.conditions:
        if condition.metric not in names:
            names.append(condition.metric)
    return tuple(names)


def fill_gaps(x: np.ndarray) -> np.ndarray:
    """Fill NaNs along the step axis (-2) from the previous step, leading ones from the next;
    a feature missing in the whole window becomes 0."""
    steps = x.shape[-2]
    valid = ~np.isnan(x)
    index = np.where(valid, np.arange(steps)[:, None], 0)
    np.maximum.accumulate(index, axis=-2, out=index)
    filled = np.take_along_axis(x, index, axis=-2)
    if np.isnan(filled).any():  # leading gaps: take the first valid value after them
        rev_valid = ~np.isnan(filled[..., ::-1, :])
        rev_index = np.where(rev_valid, np.arange(steps)[:, None], 0)
        np.maximum.accumulate(rev_index, axis=-2, out=rev_index)
        filled = np.take_along_axis(filled[..., ::-1, :], rev_index, axis=-2)[..., ::-1, :]
    return np.nan_to_num(filled, nan=0.0, posinf=0.0, neginf=0.0)


def transform(values: np.ndarray, specs: tuple[FeatureSpec, ...]) -> np.ndarray:
    """(..., steps, n_metrics) raw values -> (..., steps, n_features) unscaled features."""
    x = fill_gaps(values[..., : len(specs)].astype(np.float64, copy=True))
    for i, spec in enumerate(specs):
        column = x[..., i]
        if spec.transform == "log1p":
            column = np.log1p(np.maximum(column, 0.0))
        elif spec.transform == "log":
            column = np.log(np.maximum(column, 0.0) + LOG_EPSILON)
        if spec.center == "window":
            column = column - column.mean(axis=-1, keepdims=True)
        x[..., i] = column
    return x


@dataclass(frozen=True)
class Scaler:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, features: np.ndarray) -> Scaler:
        flat = features.reshape(-1, features.shape[-1])
        std = flat.std(axis=0)
        std = np.where(std < 1e-6, 1.0, std)  # a constant feature must not divide by zero
        return cls(tuple(map(float, flat.mean(axis=0))), tuple(map(float, std)))

    def apply(self, features: np.ndarray) -> np.ndarray:
        scaled = (features - np.asarray(self.mean)) / np.asarray(self.std)
        # Far outside the training range the LSTM's gates saturate anyway; clipping keeps a
        # wild value (qps x 1e9) from turning into inf or NaN inside the model.
        return np.clip(np.nan_to_num(scaled, nan=0.0), -20.0, 20.0).astype(np.float32)

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, doc: dict[str, list[float]]) -> Scaler:
        return cls(tuple(map(float, doc["mean"])), tuple(map(float, doc["std"])))
