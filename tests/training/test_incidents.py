"""Incident history and operator feedback as training labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sentinel.config.load import parse_config
from sentinel.core.incidents import Feedback, Incident, LabelSources, parse_episode_key
from sentinel.errors import ConfigError, DataError
from sentinel.training.dataset import labelled_windows
from sentinel.training.history import Series, label
from sentinel.training.incidents import incidents_from_metric, read_incidents
from sentinel.training.train import label_sources

T0 = 1_763_856_000
RAW = {"step": "10s", "window": "60s", "horizon": "30s", "features": [{"name": "qps"}],
       "failure": {"any": [{"metric": "incident", "op": ">=", "value": 1}], "for": "10s"}}
CONFIG = parse_config(RAW)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_and_jsonl_incidents_read_alike_with_unix_and_rfc3339_times(tmp_path: Path) -> None:
    csv_file = _write(tmp_path, "i.csv", "service,start,end,cause,ticket\n"
                      "checkout,1763899200,2025-11-23T12:15:00Z,db,INC-1\n\n"
                      "cart , 2025-11-23T13:00:00+01:00,1763899260.5,\n")
    jsonl_file = _write(tmp_path, "i.jsonl",
                        '{"service": "checkout", "start": 1763899200, '
                        '"end": "2025-11-23T12:15:00Z", "cause": "db"}\n'
                        '{"service": "cart", "start": "2025-11-23T13:00:00+01:00", '
                        '"end": 1763899260.5}\n')
    expected = (Incident("checkout", 1763899200.0, 1763900100.0, "db"),
                Incident("cart", 1763899200.0, 1763899260.5, ""))
    assert read_incidents(csv_file) == expected
    assert read_incidents(jsonl_file) == expected


@pytest.mark.parametrize(("name", "text", "message"), [
    ("a.csv", "service,start\nx,1763899200\n", r"a.csv:1: .*missing end"),
    ("b.csv", "service,start,end\nx,1763899200,1763899300\ny,yesterday,1763899300\n",
     r"b.csv:3: field start: 'yesterday' is neither Unix seconds nor RFC 3339"),
    ("c.csv", "service,start,end\n,1763899200,1763899300\n", r"c.csv:2: field service: .*empty"),
    ("d.csv", "service,start,end\nx,1763899300,1763899200\n", r"d.csv:2: field end: .* before start"),
    ("e.csv", "service,start,end\nx,1763899200000,1763899300000\n",
     r"e.csv:2: field start: .*milliseconds"),
    ("f.jsonl", '{"service": "x", "start": 1763899200, "end": 1763899300}\n[1]\n',
     r"f.jsonl:2: expected an object"),
    ("g.jsonl", '{"service": "x", "start": 1763899200}\n', r"g.jsonl:1: field end: missing"),
    ("h.jsonl", '{"service": "x", "start": "2025-11-23T12:00:00", "end": 1763899300}\n',
     r"h.jsonl:1: field start: .*time zone"),
])
def test_a_bad_incident_names_its_line_and_field(tmp_path: Path, name: str, text: str,
                                                message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_incidents(_write(tmp_path, name, text))


def test_a_missing_incidents_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_incidents(tmp_path / "nope.csv")


def _series(n_steps: int, seed: int) -> Series:
    rng = np.random.default_rng(seed)
    flag = np.zeros(n_steps)
    for start in rng.choice(n_steps - 10, size=6, replace=False):
        flag[start: start + int(rng.integers(1, 6))] = 1.0
    qps = rng.normal(100, 5, n_steps)
    return Series("checkout", T0, 10, np.stack([qps, flag], axis=1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incidents_from_the_flag_label_exactly_as_the_rule_on_the_flag(seed: int) -> None:
    series = _series(400, seed)
    by_rule = label(series, CONFIG)
    incidents = incidents_from_metric([("checkout", series.ts, series.values[:, 1])], 10)
    stripped = Series("checkout", T0, 10, np.stack(
        [series.values[:, 0], np.full(len(series.values), np.nan)], axis=1))
    by_incidents = label(stripped, CONFIG, LabelSources("incidents", tuple(incidents), T0))
    assert by_incidents.events == by_rule.events
    np.testing.assert_array_equal(by_incidents.y, by_rule.y)
    assert by_incidents.labelled_from == by_rule.labelled_from == 0
    assert label(stripped, CONFIG).events == []  # the rule alone sees nothing there


def test_incidents_only_leave_history_before_incidents_from_unlabelled() -> None:
    series = _series(100, 4)
    item = label(series, CONFIG, LabelSources("incidents", (), T0 + 500))
    assert item.labelled_from == 50 and item.events == []


def test_both_joins_rule_failures_and_recorded_incidents() -> None:
    series = _series(400, 5)
    by_rule = label(series, CONFIG)
    extra = Incident("checkout", T0 + 3700, T0 + 3750)  # steps 370..374: no flag there
    assert not series.values[-30:-25, 1].any()
    both = label(series, CONFIG, LabelSources("both", (extra, Incident("other", T0, T0 + 99))))
    assert len(both.events) == len(by_rule.events) + 1
    assert both.events[-1].start_ts == T0 + 3700


def test_feedback_relabels_the_windows_around_its_episode() -> None:
    series = Series("checkout", T0, 10, np.stack([np.full(200, 100.0), np.zeros(200)], axis=1))
    fired = T0 + 1000
    item = label(series, CONFIG, LabelSources(feedback=(
        Feedback("checkout", fired, "false_alarm"), Feedback("checkout", T0 + 1800, "confirmed"),
        Feedback("elsewhere", fired, "confirmed"))))
    assert item.feedback is not None
    false_rows = (series.ts >= fired - 30) & (series.ts <= fired + 30)
    confirmed_rows = (series.ts >= T0 + 1800 - 15) & (series.ts <= T0 + 1800)
    np.testing.assert_array_equal(item.feedback, false_rows | confirmed_rows)
    assert (item.y[false_rows] == 0).all() and (item.y[confirmed_rows] == 1).all()
    assert item.y[~(false_rows | confirmed_rows)].sum() == 0
    windows = labelled_windows([item], CONFIG)
    assert windows.judged is not None and windows.judged.sum() == (
        false_rows | confirmed_rows)[CONFIG.window_steps - 1:].sum()


def test_feedback_never_gives_a_target_to_a_window_inside_a_failure() -> None:
    flag = np.zeros(200)
    flag[100:110] = 1
    series = Series("checkout", T0, 10, np.stack([np.full(200, 100.0), flag], axis=1))
    item = label(series, CONFIG, LabelSources(feedback=(
        Feedback("checkout", T0 + 1000, "confirmed"),)))
    assert np.isnan(item.y[100:110]).all()


def test_labels_config_and_incidents_file_must_agree(tmp_path: Path) -> None:
    path = _write(tmp_path, "i.csv", "service,start,end\ncheckout,1763899200,1763899300\n")
    with pytest.raises(ConfigError, match=r"training\.labels"):
        parse_config({**RAW, "training": {"incidents": str(path)}})
    config = parse_config({**RAW, "training": {"labels": "incidents", "incidents": str(path),
                                               "incidents_from": "2025-11-23T00:00:00Z"}})
    sources = label_sources(config)
    assert sources.mode == "incidents" and len(sources.incidents) == 1
    assert sources.incidents_from_ts == 1763856000.0
    with pytest.raises(DataError, match=r"training\.labels is 'rule'"):
        label_sources(CONFIG, path)
    with pytest.raises(DataError, match="no incidents file"):
        label_sources(parse_config({**RAW, "training": {"labels": "both"}}))
    with pytest.raises(ConfigError, match=r"training\.incidents_from"):
        parse_config({**RAW, "training": {"incidents_from": "yesterday"}})


@pytest.mark.parametrize(("key", "message"), [
    ("checkout", "expected <service>@<startsAt>"),
    ("checkout@noon", "neither RFC 3339"),
    ("@1763899200", "empty or blank"),
    ("checkout@2025-11-23T12:00:00", "neither RFC 3339"),
])
def test_a_bad_episode_key_says_what_a_key_is(key: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_episode_key(key)


def test_an_episode_key_is_service_at_startsat() -> None:
    assert parse_episode_key("pay@ments@1763899200") == ("pay@ments", 1763899200)
    assert Feedback("checkout", 1763899200, "confirmed").episode == "checkout@2025-11-23T12:00:00Z"
    assert json.dumps(parse_episode_key("checkout@2025-11-23T12:00:00.000Z"))


def test_cli_train_reads_incidents_and_labels_options_before_any_training(tmp_path: Path,
                                                                           capsys) -> None:
    from sentinel.cli import main

    config = _write(tmp_path, "c.yaml", json.dumps(RAW))
    history = _write(tmp_path, "h.jsonl", "")
    bad = _write(tmp_path, "i.csv", "service,start,end\ncheckout,soon,1763899300\n")
    args = ["train", "--config", str(config), "--history", str(history), "--out",
            str(tmp_path / "m")]
    assert main([*args, "--incidents", str(bad)]) == 2
    assert "training.labels is 'rule'" in capsys.readouterr().err
    assert main([*args, "--incidents", str(bad), "--labels", "both"]) == 2
    assert "i.csv:2: field start: 'soon'" in capsys.readouterr().err
    assert main([*args, "--labels", "incidents"]) == 2
    assert "no incidents file" in capsys.readouterr().err
    assert main([*args, "--labels", "both", "--incidents", str(bad),
                 "--incidents-from", "yesterday"]) == 2
    assert "--incidents-from" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
