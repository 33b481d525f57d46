"""simulate -> train -> backtest through the command line, small enough for CI."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest
import yaml

from sentinel.cli import main

pytestmark = pytest.mark.slow
SHIPPED = Path(__file__).resolve().parents[2] / "config" / "sentinel.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("e2e")
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["training"].update(epochs=4, lstm_units=[16, 8], batch_size=512, negative_stride=6)
    config = tmp / "sentinel.yaml"
    config.write_text(yaml.safe_dump(doc))
    paths = {name: tmp / name for name in ("train.jsonl", "test.jsonl", "model", "alerts.jsonl",
                                            "scores.csv", "report.json", "plot.png")}
    assert main(["simulate", "--services", "4", "--days", "2", "--seed", "3",
                 "--out", str(paths["train.jsonl"])]) == 0
    assert main(["simulate", "--services", "4", "--days", "1", "--seed", "4",
                 "--out", str(paths["test.jsonl"])]) == 0
    assert main(["train", "--config", str(config), "--history", str(paths["train.jsonl"]),
                 "--out", str(paths["model"])]) == 0
    assert main(["backtest", "--config", str(config), "--model", str(paths["model"]),
                 "--data", str(paths["test.jsonl"]), "--alerts", str(paths["alerts.jsonl"]),
                 "--scores", str(paths["scores.csv"]), "--report", str(paths["report.json"]),
                 "--plot", str(paths["plot.png"])]) == 0
    return {"paths": paths, "report": json.loads(paths["report.json"].read_text())}


def test_training_writes_a_verified_artifact(run: dict) -> None:
    model = run["paths"]["model"]
    metadata = json.loads((model / "metadata.json").read_text())
    assert {"model.weights.h5", "scaler.json", "metadata.json", "checksums.json"} <= {
        p.name for p in model.iterdir()}
    assert [f["name"] for f in metadata["features"]] == ["qps", "p99_ms", "error_rate", "cpu"]
    assert metadata["training"]["positives"] > 0
    assert 0.0 < metadata["operating_threshold"] < 1.0


def test_backtest_scores_every_scorable_window_in_range(run: dict) -> None:
    with run["paths"]["scores.csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and set(rows[0]) == {"service", "ts", "risk"}
    assert all(0.0 <= float(r["risk"]) <= 1.0 for r in rows)
    per_service = {}
    for r in rows:
        per_service.setdefault(r["service"], []).append(int(r["ts"]))
    assert len(per_service) == 4
    # a day of 10 s steps, less the first window and the gap-rule exclusions
    assert all(8000 < len(ts) <= 8640 and ts == sorted(ts) for ts in per_service.values())


def test_backtest_alerts_follow_the_contract(run: dict) -> None:
    lines = run["paths"]["alerts.jsonl"].read_text().splitlines()
    alerts = [json.loads(line) for line in lines]
    assert alerts, "a day with failures and a trained model raises at least one alert"
    # the contract's four fields, and the phase (DESIGN.md allows more fields)
    assert all(set(a) == {"service", "state", "ts", "risk", "phase"} for a in alerts)
    assert {a["phase"] for a in alerts} <= {"predicted", "failing"}
    for service in {a["service"] for a in alerts}:
        states = [a["state"] for a in alerts if a["service"] == service]
        assert states[0] == "firing"
        assert all(x != y for x, y in itertools.pairwise(states)), "states alternate"


def test_report_grades_model_and_baseline(run: dict) -> None:
    report = run["report"]
    model, baseline = report["model"]["overall"], report["baseline"]["overall"]
    assert model["failures"] == baseline["failures"] > 0
    assert 0.0 <= model["early_recall"] <= 1.0
    # even four epochs learn something: a ranking far better than chance (whose average
    # precision is the share of positive windows)
    assert model["pr_auc"] is not None
    assert model["pr_auc"] > 3 * model["positive_window_share"]
    assert run["paths"]["plot.png"].stat().st_size > 10_000


def test_train_summary_line_is_strict_json(tmp_path, monkeypatch, capsys) -> None:
    import sentinel.training.train as training

    monkeypatch.setattr(training, "train", lambda config, history, out, **_: {
        "validation": {"pr_auc": float("nan"), "early_recall": 0.5}, "seconds": 1.0})
    assert main(["train", "--config", str(SHIPPED), "--history", str(tmp_path / "h.jsonl"),
                 "--out", str(tmp_path / "model")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]

    def no_constants(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    assert json.loads(last, parse_constant=no_constants) == {
        "validation": {"pr_auc": None, "early_recall": 0.5}, "seconds": 1.0}
