"""Hostile config files: bounded messages, bounded size and alias expansion, duplicate keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.config.load import load_config, parse_config
from sentinel.config.yaml_file import MAX_CONFIG_BYTES
from sentinel.errors import ConfigError

SHIPPED = Path(__file__).parents[2] / "config" / "sentinel.yaml"


def _shipped_with(tmp_path: Path, old: str, new: str) -> Path:
    text = SHIPPED.read_text()
    assert old in text
    path = tmp_path / "sentinel.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_a_duplicate_key_is_rejected_naming_both_lines(tmp_path: Path) -> None:
    path = _shipped_with(tmp_path, "step: 10s", "step: 10s\nstep: 20s")
    line = SHIPPED.read_text().splitlines().index(
        next(x for x in SHIPPED.read_text().splitlines() if x.startswith("step: 10s"))) + 1

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert "'step'" in message and f"line {line + 1}" in message and f"line {line}" in message


def test_merge_keys_still_override_without_a_duplicate_error(tmp_path: Path) -> None:
    path = _shipped_with(tmp_path, "kafka:\n", "x-defaults: &d {group_id: a}\nkafka:\n  <<: *d\n")
    with pytest.raises(ConfigError) as caught:  # x-defaults is unknown; no duplicate complaint
        load_config(path)
    assert "x-defaults" in str(caught.value) and "once per mapping" not in str(caught.value)


def test_a_huge_value_under_a_known_key_gives_a_short_message(tmp_path: Path) -> None:
    path = _shipped_with(tmp_path, "step: 10s", "step: " + "x" * 10_000)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert len(str(caught.value)) < 500 and "10,000 characters" in str(caught.value)


def test_a_billion_laughs_is_refused_before_it_is_walked(tmp_path: Path) -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    path = _shipped_with(tmp_path, "step: 10s", "\n".join(lines) + "\nstep: *l9")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert "aliases" in str(caught.value) and len(str(caught.value)) < 500


def test_a_moderate_alias_value_under_a_known_key_is_summarised(tmp_path: Path) -> None:
    doc = {"step": [["x" * 50] * 50] * 50}
    with pytest.raises(ConfigError) as caught:
        parse_config(doc)
    assert len(str(caught.value)) < 600


def test_a_config_file_over_the_size_bound_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("step: " + "x" * (MAX_CONFIG_BYTES + 10))

    with pytest.raises(ConfigError, match="at most"):
        load_config(path)


def test_a_5000_digit_number_is_a_config_error(tmp_path: Path) -> None:
    path = _shipped_with(tmp_path, "step: 10s", "step: " + "9" * 5000)

    with pytest.raises(ConfigError, match="4,300 digits"):
        load_config(path)


def test_check_config_prints_one_short_line_and_exits_2_for_a_billion_laughs(tmp_path: Path) -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    path = _shipped_with(tmp_path, "step: 10s", "\n".join(lines) + "\nstep: *l11")

    done = subprocess.run([sys.executable, "-m", "sentinel", "check-config", str(path)],
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr) < 600
