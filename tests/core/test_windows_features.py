"""Rolling windows, the scoring rule for gaps, and the feature pipeline up to the model input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sentinel.config.schema import FeatureSpec
from sentinel.core.buckets import Bucket
from sentinel.core.features import Scaler, decide_transforms, fill_gaps, increases, transform
from sentinel.core.windows import WindowStore, max_missing_steps, scorable

NAN = np.nan
T0 = 1_763_899_200


def _bucket(i: int, *values: float, service: str = "cart") -> Bucket:
    return Bucket(service, T0 + 10 * i, np.array(values, dtype=float), 1)


def test_window_store_returns_none_until_full_then_the_window_ending_at_each_bucket() -> None:
    store = WindowStore(n_metrics=2, window_steps=3)

    results = [store.push(_bucket(i, i, 10 * i)) for i in range(5)]

    assert results[:2] == [None, None]
    for i in (2, 3, 4):
        window = results[i]
        assert window is not None and window.service == "cart" and window.ts == T0 + 10 * i
        assert window.values.tolist() == [[i - 2, 10 * (i - 2)], [i - 1, 10 * (i - 1)], [i, 10 * i]]


def test_window_is_a_copy_that_later_pushes_do_not_change() -> None:
    store = WindowStore(n_metrics=1, window_steps=2)
    store.push(_bucket(0, 1.0))
    window = store.push(_bucket(1, 2.0))

    store.push(_bucket(2, 3.0))

    assert window is not None and window.values.tolist() == [[1.0], [2.0]]


def test_window_store_keeps_services_apart_and_drop_restarts_filling() -> None:
    store = WindowStore(n_metrics=1, window_steps=2)
    store.push(_bucket(0, 1.0, service="cart"))
    assert store.push(_bucket(0, 5.0, service="pay")) is None
    window = store.push(_bucket(1, 2.0, service="cart"))
    assert window is not None and window.values.tolist() == [[1.0], [2.0]]

    store.drop("cart")

    assert "cart" not in store and "pay" in store
    assert store.push(_bucket(2, 3.0, service="cart")) is None


def test_gap_buckets_count_towards_filling_the_window() -> None:
    store = WindowStore(n_metrics=1, window_steps=2)
    store.push(Bucket("cart", T0, np.array([NAN]), 0))

    window = store.push(_bucket(1, 2.0))

    assert window is not None and np.isnan(window.values[0, 0]) and window.values[1, 0] == 2.0


@pytest.mark.parametrize(("window_steps", "fraction", "expected"), [
    (30, 0.2, 6), (30, 0.0, 0), (10, 0.25, 2), (5, 0.2, 1), (3, 0.1, 0), (4, 0.5, 2),
])
def test_max_missing_steps_is_the_floor_of_the_fraction(window_steps: int, fraction: float,
                                                         expected: int) -> None:
    assert max_missing_steps(window_steps, fraction) == expected


FEATURES = np.array([0, 1])  # columns 0 and 1 are features, column 2 is a failure-rule metric


@pytest.mark.parametrize(("rows", "max_missing", "expected"), [
    ([[1, 1, 1], [1, 1, 1], [1, 1, 1]], 0, True),
    ([[1, 1, 1], [1, NAN, 1], [1, 1, 1]], 0, False),
    ([[1, 1, 1], [1, NAN, 1], [1, 1, 1]], 1, True),
    ([[NAN, 1, 1], [1, NAN, 1], [1, 1, 1]], 1, False),  # two steps missing a feature
    ([[NAN, NAN, 1], [1, 1, 1], [1, 1, 1]], 1, True),  # one step, however many features
    ([[1, 1, NAN], [1, 1, NAN], [1, 1, NAN]], 0, True),  # non-feature metrics do not count
    ([[NAN, NAN, NAN]] * 3, 2, False),
])
def test_window_is_scorable_with_at_most_max_missing_steps(rows: list, max_missing: int,
                                                           expected: bool) -> None:
    values = np.array(rows, dtype=float)

    assert bool(scorable(values, FEATURES, max_missing)) is expected


def test_scorable_works_on_a_batch_of_windows() -> None:
    good = np.ones((3, 3))
    bad = good.copy()
    bad[:2, 0] = NAN

    assert scorable(np.stack([good, bad, good]), FEATURES, 1).tolist() == [True, False, True]


@pytest.mark.parametrize(("column", "filled"), [
    ([1, NAN, NAN, 4], [1, 1, 1, 4]),  # forward fill from the previous step
    ([NAN, NAN, 3, NAN], [3, 3, 3, 3]),  # leading gaps take the first valid value after them
    ([NAN, 2, NAN, 5], [2, 2, 2, 5]),
    ([NAN, NAN, NAN, NAN], [0, 0, 0, 0]),  # a feature missing in the whole window
    ([1, 2, 3, 4], [1, 2, 3, 4]),
])
def test_fill_gaps(column: list, filled: list) -> None:
    x = np.array([column, [7.0] * 4], dtype=float).T  # a second, complete feature beside it

    result = fill_gaps(x)

    assert result[:, 0].tolist() == filled
    assert result[:, 1].tolist() == [7.0] * 4


def test_fill_gaps_fills_each_window_of_a_batch_on_its_own() -> None:
    batch = np.array([[[1.0], [NAN]], [[NAN], [NAN]], [[NAN], [5.0]]])

    assert fill_gaps(batch)[..., 0].tolist() == [[1, 1], [0, 0], [5, 5]]


def test_fill_gaps_does_not_change_its_input() -> None:
    x = np.array([[NAN], [1.0]])

    fill_gaps(x)

    assert np.isnan(x[0, 0])


SHAPE = np.array([1.0, 1.0, 1.1, 1.3, 2.0, 2.5, 1.8, 1.2])  # a doubling and back


def test_log1p_and_window_centering_make_50_and_50000_qps_alike() -> None:
    specs = (FeatureSpec("qps", "log1p", "window"),)
    small = (50 * SHAPE)[:, None]
    large = (50_000 * SHAPE)[:, None]

    a, b = transform(small, specs), transform(large, specs)

    np.testing.assert_allclose(a, b, atol=0.02)
    assert abs(a.mean()) < 1e-9  # centred on the window's own mean
    assert a.std() > 0.2  # and the shape survives


def test_without_transforms_the_scale_is_kept() -> None:
    specs = (FeatureSpec("qps"),)

    x = transform((50 * SHAPE)[:, None], specs)

    np.testing.assert_allclose(x[:, 0], 50 * SHAPE)


def test_transform_keeps_only_the_feature_columns_and_fills_gaps() -> None:
    specs = (FeatureSpec("qps", "log1p"), FeatureSpec("p99_ms", center="window"))
    raw = np.array([[NAN, 100.0, 0.5], [np.e - 1, NAN, 0.6], [-5.0, 400.0, 0.7]])

    x = transform(raw, specs)

    assert x.shape == (3, 2)
    # qps: back-filled, log1p'd, negatives floored at log1p(0)
    np.testing.assert_allclose(x[:, 0], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(x[:, 1], [-100.0, -100.0, 200.0])


def test_scaler_standardises_and_round_trips_through_json() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal([5.0, -3.0], [2.0, 0.5], size=(200, 10, 2))

    scaler = Scaler.fit(features)
    scaled = scaler.apply(features)
    again = Scaler.from_json(json.loads(json.dumps(scaler.to_json())))

    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled.reshape(-1, 2).mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(scaled.reshape(-1, 2).std(axis=0), 1.0, atol=1e-5)
    assert again == scaler
    np.testing.assert_array_equal(again.apply(features), scaled)


def test_constant_feature_does_not_divide_by_zero() -> None:
    features = np.stack([np.full((50, 4), 3.0), np.arange(200.0).reshape(50, 4)], axis=-1)

    scaler = Scaler.fit(features)
    scaled = scaler.apply(features)

    assert scaler.std[0] == 1.0
    assert np.isfinite(scaled).all()
    np.testing.assert_array_equal(scaled[..., 0], 0.0)


@pytest.mark.parametrize("value", [1e12, -1e12, 1e300, -1e300, np.inf, -np.inf])
def test_scaler_clips_huge_values_to_finite(value: float) -> None:
    scaler = Scaler((0.0,), (1.0,))

    scaled = scaler.apply(np.array([[value]]))

    assert np.isfinite(scaled).all()
    assert abs(float(scaled[0, 0])) == 20.0


def test_log_transform_resolves_small_error_rates() -> None:
    rates = np.array([[[0.002], [0.006], [0.0], [-1.0]]])
    out = transform(rates, (FeatureSpec("error_rate", transform="log"),))
    assert out[0, :, 0] == pytest.approx(np.log([0.0021, 0.0061, 1e-4, 1e-4]))
    # a tripled error rate is a clear step, unlike raw values near zero
    assert out[0, 1, 0] - out[0, 0, 0] > 1.0


def test_auto_transforms_are_decided_from_the_training_data() -> None:
    rng = np.random.default_rng(0)
    n, steps = 300, 20
    scale = 10 ** rng.uniform(1, 5, (n, 1))  # services of 10 to 100,000 qps
    qps = scale * rng.uniform(0.8, 1.2, (n, steps))
    cpu = rng.uniform(0.3, 0.7, (n, steps))
    total = np.cumsum(rng.uniform(5, 15, (n, steps)), axis=1)
    total[7, 12:] -= total[7, 11]  # a restart resets the counter
    specs = (FeatureSpec("qps"), FeatureSpec("cpu"), FeatureSpec("requests_total"),
             FeatureSpec("forced", transform="none"))
    raw = np.stack([qps, cpu, total, qps], axis=-1)
    kinds, scales = decide_transforms(raw, specs)
    assert kinds == ("slog", "none", "rate", "none")
    assert 10 <= scales[0] < 200 and scales[1] == 1.0
    # after the transform, a doubling reads alike for a 30-qps and a 30,000-qps service
    pair = np.array([[[30.0], [60.0]], [[30_000.0], [60_000.0]]])
    x = transform(pair, (FeatureSpec("qps"),), ("slog",), (1.0,))
    assert np.diff(x[0, :, 0])[0] == pytest.approx(np.diff(x[1, :, 0])[0], abs=0.02)
    # the counter becomes its per-step increase, the reset read as a restart from zero
    rates = increases(total[7])
    assert (rates > 0).all() and rates[12] == pytest.approx(total[7, 12])


def test_fitted_scaler_adds_deviation_channels_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    raw = rng.normal(100, 10, (500, 12, 2))
    raw[:, -3:, 0] += 50  # the last steps jump: the deviation channel shows it
    specs = (FeatureSpec("a"), FeatureSpec("b"))
    scaler = Scaler.fit_raw(raw, specs)
    x = scaler.prepare(raw, specs)
    assert x.shape == (500, 12, 4) and scaler.inputs == 4
    assert np.median(x[:, -1, 2]) > np.median(x[:, 0, 2]) + 1  # a's deviation rises at the end
    again = Scaler.from_json(scaler.to_json())
    assert np.array_equal(again.prepare(raw, specs), x)
    assert np.abs(x).max() <= 10.0  # clipped
