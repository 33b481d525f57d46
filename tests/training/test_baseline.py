"""The static-threshold baseline on data it cannot use: a DataError (exit code 2 at the CLI),
not a ValueError with a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.cli import main
from sentinel.config.load import parse_config
from sentinel.errors import DataError, SentinelError
from sentinel.training.baseline import tune_baseline
from sentinel.training.dataset import WindowSet
from sentinel.training.history import Labelled, Series

CONFIG = parse_config({
    "step": "10s", "window": "30s", "horizon": "10s",
    "features": [{"name": "qps"}],
    "failure": {"any": [{"metric": "error_rate", "op": ">=", "value": 0.05}]},
})
T0 = 1_763_856_000


def _all_missing_windows() -> WindowSet:
    steps = 6
    series = Series("cart", T0, 10, np.full((steps, 2), np.nan))
    labelled = Labelled(series, [], np.zeros(steps))
    rows = np.arange(2, steps)
    return WindowSet([labelled], np.zeros(len(rows), int), rows, T0 + 10 * rows,
                     np.zeros(len(rows)), np.ones(len(rows), bool))


def test_baseline_without_any_feature_value_is_a_data_error():
    windows = _all_missing_windows()
    with pytest.raises(DataError, match="no feature has any value"):
        tune_baseline(CONFIG, windows, np.arange(len(windows.ts)))


def test_a_data_error_reaching_the_cli_exits_2_with_one_line(monkeypatch, capsys):
    def train(args):
        raise DataError("no feature has any value to tune a baseline on")

    monkeypatch.setattr("sentinel.cli._train", train)  # looked up when the parser is built
    assert issubclass(DataError, SentinelError)
    code = main(["train", "--config", "c.yaml", "--history", "h.jsonl", "--out", "m"])
    assert code == 2
    assert "no feature has any value" in capsys.readouterr().err
