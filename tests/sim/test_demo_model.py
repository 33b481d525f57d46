"""The shipped demo model is what `scripts/train-demo-model` makes, and the quick start's
stream makes it fire and resolve early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.sim import demo

ROOT = Path(__file__).parents[2]


def _figures(metadata: dict) -> dict:
    overall = metadata["validation"]["overall"]
    return {"threshold": metadata["operating_threshold"], "pr_auc": overall.get("pr_auc"),
            "early_recall": overall.get("early_recall")}


def test_the_shipped_demo_model_is_small_and_loads(tmp_path: Path) -> None:
    size = sum(p.stat().st_size for p in demo.DEMO_MODEL.rglob("*") if p.is_file())
    assert size < 500_000, f"{size} bytes"
    version = demo.ensure_model(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "metadata.json").read_text())["version"] == version


def test_the_demo_stream_fires_and_resolves_within_two_minutes_at_20x(tmp_path: Path) -> None:
    demo.ensure_model(tmp_path / "model")
    config = tmp_path / "sentinel.yaml"
    demo.write_config(config, "127.0.0.1:9", 9, 9)
    samples, fire_ts, resolve_ts = demo.demo_stream(config, tmp_path / "model", seed=5, speed=20)

    assert 40 <= (fire_ts - samples[0]["ts"]) / 20 <= 90
    assert (resolve_ts - samples[0]["ts"]) / 20 <= 110


@pytest.mark.slow
def test_the_training_script_reproduces_the_shipped_demo_model(tmp_path: Path) -> None:
    out = tmp_path / "demo_model"
    subprocess.run([str(ROOT / "scripts" / "train-demo-model"), str(out)], check=True,
                   env={**os.environ, "PYTHON": sys.executable}, timeout=1800,
                   capture_output=True)
    shipped = _figures(json.loads((demo.DEMO_MODEL / "metadata.json").read_text()))
    again = _figures(json.loads((out / "metadata.json").read_text()))

    # same data, same seed, same code: equal up to floating-point differences between machines
    for name, value in shipped.items():
        assert again[name] == pytest.approx(value, abs=0.1), (name, again, shipped)
