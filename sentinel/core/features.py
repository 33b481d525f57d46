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


def transform(values: np.ndarray, specs: tuple[FeatureSpec, ...],
              resolved: tuple[str, ...] | None = None,
              log_scale: tuple[float, ...] | None = None) -> np.ndarray:
    """(..., steps, n_metrics) raw values -> (..., steps, n_features) unscaled features.

    `resolved` names each feature's transform after `auto` was decided from training data
    (`decide_transforms`); ``slog`` is sign(x) * log1p(|x| / s) with s = `log_scale[i]`, so
    a quantity that spans orders of magnitude becomes differences of logarithms."""
    x = fill_gaps(values[..., : len(specs)].astype(np.float64, copy=True))
    for i, spec in enumerate(specs):
        column = x[..., i]
        kind = resolved[i] if resolved is not None else spec.transform
        if kind == "log1p":
            column = np.log1p(np.maximum(column, 0.0))
        elif kind == "log":
            column = np.log(np.maximum(column, 0.0) + LOG_EPSILON)
        elif kind in ("slog", "rate"):
            if kind == "rate":
                column = increases(column)
            scale = log_scale[i] if log_scale is not None else 1.0
            column = np.sign(column) * np.log1p(np.abs(column) / scale)
        if spec.center == "window":
            column = column - column.mean(axis=-1, keepdims=True)
        x[..., i] = column
    return x


HEAVY_TAIL_RATIO = 10.0  # (q99.9 - q50) / IQR beyond this: the feature gets a log scale
ORDERS_OF_MAGNITUDE = 100.0  # a non-negative feature whose q99/q01 exceeds this: log scale
SCALE_QUANTILE = 0.1  # `slog`'s scale: this quantile of the feature's non-zero magnitudes


def decide_transforms(raw: np.ndarray, specs: tuple[FeatureSpec, ...]
                      ) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Each `auto` feature's transform, decided from training windows (..., steps, n_metrics).

    A heavy-tailed feature (its extremes far beyond its interquartile range, as a latency that
    explodes) or one spanning orders of magnitude (services of 10 and 100,000 qps, an error
    rate from 0 to 1) gets ``slog``; a cumulative counter gets ``rate``; one with
    a bounded spread (a CPU fraction) stays linear. The log scale is a small quantile of the
    feature's own non-zero magnitudes, so that 300 -> 3,000 qps and 20,000 -> 200,000 qps are
    the same step."""
    flat = raw.reshape(-1, raw.shape[-1])
    kinds: list[str] = []
    scales: list[float] = []
    for i, spec in enumerate(specs):
        column = flat[:, i]
        column = column[np.isfinite(column)]
        scale = 1.0
        kind = spec.transform
        if kind == "auto" and is_counter(raw[..., i]):
            # a cumulative counter (requests_total): its level only grows, so the model sees
            # its per-step increase, on a log scale
            kind = "rate"
            step = increases(fill_gaps(raw[..., i: i + 1])[..., 0]).ravel()
            magnitude = np.abs(step[step != 0])
            scale = max(float(np.quantile(magnitude, SCALE_QUANTILE)), 1e-12) if len(magnitude) \
                else 1.0
        elif kind == "auto":
            kind = "none"
            if len(column):
                q25, q50, q75, q999 = np.quantile(column, (0.25, 0.5, 0.75, 0.999))
                q001 = np.quantile(column, 0.001)
                spread = max(q75 - q25, 1e-12)
                q01, q99 = np.quantile(column, (0.01, 0.99))
                orders = q01 >= 0 and q99 > ORDERS_OF_MAGNITUDE * max(q01, 1e-12)
                if orders or max(q999 - q50, q50 - q001) > HEAVY_TAIL_RATIO * spread:
                    magnitude = np.abs(column[column != 0])
                    if len(magnitude):
                        kind = "slog"
                        scale = max(float(np.quantile(magnitude, SCALE_QUANTILE)), 1e-12)
        kinds.append(kind)
        scales.append(scale)
    return tuple(kinds), tuple(scales)


COUNTER_SHARE = 0.98  # of the non-zero step changes that are increases: a cumulative counter


def is_counter(values: np.ndarray) -> bool:
    """Does a feature (windows, steps) behave like a cumulative counter: non-negative, and
    nearly every change an increase (a restart resets it, rarely)?"""
    with np.errstate(invalid="ignore"):
        change = np.diff(values, axis=-1)
    change = change[np.isfinite(change) & (change != 0)]
    finite = values[np.isfinite(values)]
    return (len(change) >= 100 and bool((finite >= 0).all())
            and float((change > 0).mean()) >= COUNTER_SHARE)


def increases(counter: np.ndarray) -> np.ndarray:
    """A counter's increase per step along the last axis; after a reset (a drop) the new value
    is the increase, as Prometheus's rate() reads it. The first step repeats the second's."""
    step = np.diff(counter, axis=-1)
    step = np.where(step < 0, counter[..., 1:], step)
    return np.concatenate([step[..., :1], step], axis=-1)


def with_deviation(x: np.ndarray) -> np.ndarray:
    """Features (..., steps, n) -> (..., steps, 2n): each feature, then its deviation from the
    window's own median. The first half says where a service is (against the failure rule's
    absolute limits), the second how far it moved from its own recent normal, which reads
    alike for a small and a large service."""
    return np.concatenate([x, x - np.median(x, axis=-2, keepdims=True)], axis=-1)


CLIP = 10.0


@dataclass(frozen=True)
class Scaler:
    """The fitted preprocessing saved with a model: the transform each feature resolved to,
    the deviation channels, and the robust standardisation of every model input."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    transforms: tuple[str, ...] | None = None  # None: the configured ones (models before `auto`)
    log_scale: tuple[float, ...] | None = None
    deviation: bool = False

    @property
    def inputs(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, features: np.ndarray) -> Scaler:
        """Mean/std standardisation of ready features (kept for models and tests before `fit_raw`)."""
        flat = features.reshape(-1, features.shape[-1])
        std = flat.std(axis=0)
        std = np.where(std < 1e-6, 1.0, std)  # a constant feature must not divide by zero
        return cls(tuple(map(float, flat.mean(axis=0))), tuple(map(float, std)))

    @classmethod
    def fit_raw(cls, raw: np.ndarray, specs: tuple[FeatureSpec, ...], deviation: bool = True
                ) -> Scaler:
        """Decide the transforms and fit a robust (median, IQR) scaling on raw training windows."""
        kinds, scales = decide_transforms(raw[..., : len(specs)], specs)
        x = transform(raw, specs, kinds, scales)
        if deviation:
            x = with_deviation(x)
        flat = x.reshape(-1, x.shape[-1])
        q25, q50, q75 = np.quantile(flat, (0.25, 0.5, 0.75), axis=0)
        scale = (q75 - q25) / 1.349
        std = flat.std(axis=0)
        scale = np.where(scale < 1e-6, std, scale)
        scale = np.where(scale < 1e-6, 1.0, scale)
        return cls(tuple(map(float, q50)), tuple(map(float, scale)), kinds, scales, deviation)

    def prepare(self, raw: np.ndarray, specs: tuple[FeatureSpec, ...]) -> np.ndarray:
        """Raw windows (n, steps, n_metrics) -> the model's input (n, steps, inputs)."""
        x = transform(raw, specs, self.transforms, self.log_scale)
        if self.deviation:
            x = with_deviation(x)
        return self.apply(x)

    def apply(self, features: np.ndarray) -> np.ndarray:
        scaled = (features - np.asarray(self.mean)) / np.asarray(self.std)
        # Far outside the training range the LSTM's gates saturate anyway; clipping keeps a
        # wild value (qps x 1e9) from turning into inf or NaN inside the model.
        clip = CLIP if self.transforms is not None else 20.0
        return np.clip(np.nan_to_num(scaled, nan=0.0), -clip, clip).astype(np.float32)

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"mean": list(self.mean), "std": list(self.std)}
        if self.transforms is not None:
            doc.update(transforms=list(self.transforms), log_scale=list(self.log_scale or ()),
                       deviation=self.deviation)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Scaler:
        transforms = doc.get("transforms")
        log_scale = doc.get("log_scale")
        return cls(tuple(map(float, doc["mean"])), tuple(map(float, doc["std"])),  # type: ignore[call-overload]
                   None if transforms is None else tuple(map(str, transforms)),  # type: ignore[call-overload]
                   None if log_scale is None else tuple(map(float, log_scale)),  # type: ignore[call-overload]
                   bool(doc.get("deviation", False)))
