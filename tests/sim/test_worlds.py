"""The domain-randomised simulator: worlds differ per seed, and each world's truth, stream
and config keep the contracts a harness relies on."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from sentinel.config.load import load_config, parse_config
from sentinel.core.labels import failing_steps, failure_runs
from sentinel.sim.worlds import DEFAULT_START_TS, draw_world, main, simulate_world, world_config, write_world

CONTRACT_KEYS = {"step", "window", "horizon", "features", "failure"}


def _rule_runs(world, sim, days: float) -> dict[str, list[tuple[int, int]]]:
    """Failure events per service as Sentinel's own labelling finds them in the samples."""
    cfg = parse_config(world_config(world))
    step, n = cfg.step_seconds, round(days * 86400 / cfg.step_seconds)
    metrics = tuple(sorted({c.metric for c in cfg.failure.conditions}))
    values = {s.name: np.full((n, len(metrics)), np.nan) for s in world.services}
    for sample in sim.samples:
        row = values[sample["service"]][(sample["ts"] - DEFAULT_START_TS) // step]
        for j, name in enumerate(metrics):
            if sample["metrics"].get(name) is not None:
                row[j] = sample["metrics"][name]
    return {name: failure_runs(failing_steps(v, metrics, cfg.failure), cfg.failure_for_steps,
                               cfg.horizon_steps) for name, v in values.items()}


def test_same_seed_draws_the_same_world_and_stream():
    assert draw_world(3) == draw_world(3)
    first, again = simulate_world(draw_world(3), 0.1), simulate_world(draw_world(3), 0.1)
    assert first.samples == again.samples and first.truth == again.truth
    assert simulate_world(draw_world(3), 0.1, seed_offset=1).samples != first.samples


def test_seeds_draw_different_worlds():
    worlds = [draw_world(seed) for seed in range(16)]
    assert len({w.step_seconds for w in worlds}) >= 3
    assert len({tuple(m.name for m in w.metrics) for w in worlds}) == len(worlds)
    assert len({(c.metric, c.op, c.value) for w in worlds for c in w.rule}) >= 8
    scales = [s.scale_qps for w in worlds for s in w.services]
    assert min(scales) < 100 and max(scales) > 10_000
    assert all(4 <= len(w.services) <= 12 for w in worlds)
    json.loads(worlds[0].to_json())  # serialisable, topology included
    assert "topology" in json.loads(worlds[0].to_json())


@pytest.mark.parametrize("seed", range(20))
def test_config_has_only_contract_keys_and_parses(seed):
    world = draw_world(seed)
    raw = world_config(world)
    assert set(raw) == CONTRACT_KEYS
    cfg = parse_config(raw)
    assert cfg.step_seconds == world.step_seconds
    assert 20 <= cfg.window_steps <= 60
    assert cfg.failure_for_steps >= 2  # so a single-step blip is never a failure
    names = {m.name for m in world.metrics}
    assert {c.metric for c in cfg.failure.conditions} <= names


def test_an_incident_flag_is_in_the_rule_and_never_a_feature():
    flagged = [w for w in map(draw_world, range(40)) if any(m.kind == "flag" for m in w.metrics)]
    assert flagged
    for world in flagged:
        flag = next(m.name for m in world.metrics if m.kind == "flag")
        assert flag not in {f["name"] for f in world_config(world)["features"]}
        assert [c.metric for c in world.rule] == [flag]


@pytest.mark.parametrize("seed", [1, 3, 4, 10])
def test_failure_rule_fires_on_every_true_failure_and_rarely_elsewhere(seed):
    world, days = draw_world(seed), 0.5
    sim = simulate_world(world, days)
    runs = _rule_runs(world, sim, days)
    step = world.step_seconds
    assert sim.truth
    for episode in sim.truth:
        start = (episode.start_ts - DEFAULT_START_TS) // step
        end = (episode.end_ts - DEFAULT_START_TS) // step
        assert any(s <= end and e >= start and abs(s - start) <= 2 for s, e in runs[episode.service]), episode
    spurious = sum(
        not any(s <= (t.end_ts - DEFAULT_START_TS) // step and e >= (t.start_ts - DEFAULT_START_TS) // step
                for t in sim.truth if t.service == service)
        for service, service_runs in runs.items() for s, e in service_runs)
    assert spurious <= 1


def test_samples_follow_the_contract_with_realistic_defects():
    world = draw_world(2)  # 10 s step: late samples possible
    sim = simulate_world(world, 0.5)
    names = {m.name for m in world.metrics}
    newest, seen, duplicates, holes = 0, set(), 0, 0
    for sample in sim.samples:
        assert set(sample) == {"service", "ts", "metrics"}
        assert isinstance(sample["ts"], int) and sample["ts"] % world.step_seconds == 0
        assert sample["ts"] >= newest - 30  # late by at most 30 s
        newest = max(newest, sample["ts"])
        assert set(sample["metrics"]) <= names
        assert all(v is None or np.isfinite(v) for v in sample["metrics"].values())
        holes += len(sample["metrics"]) < len(names) or None in sample["metrics"].values()
        key = (sample["service"], sample["ts"])
        duplicates += key in seen
        seen.add(key)
    expected = len(world.services) * 0.5 * 86400 // world.step_seconds
    assert 0.9 * expected < len(seen) < expected  # gaps
    assert duplicates and holes
    mechanisms = collections.Counter(e.mechanism for e in simulate_world(world, 2).truth)
    assert len(mechanisms) >= 4


def test_write_world_writes_train_then_test_and_the_cli_prints_a_summary(tmp_path, capsys):
    summary = write_world(5, tmp_path / "w", train_days=0.2, test_days=0.1)
    out = tmp_path / "w"
    cfg = load_config(out / "config.yaml")
    assert cfg.step_seconds == summary["step_seconds"]
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert len(train) == summary["train"]["samples"] and len(test) == summary["test"]["samples"]
    assert min(s["ts"] for s in test) > max(s["ts"] for s in train) - 60
    doc = json.loads((out / "world.json").read_text())
    assert {"topology", "truth", "services", "metrics", "promotions"} <= set(doc)
    from sentinel.config.calendar_file import read_calendar  # the announced promotions

    announced = [e["start"] for e in doc["promotions"]["train"] if e["announced"]]
    assert [e.start_ts for e in read_calendar(out / "calendar-train.yaml")] == announced
    args = ["--seed", "5", "--train-days", "0.05", "--test-days", "0.05", "--out-dir", str(tmp_path / "c")]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 5


def test_write_world_writes_its_topology_as_a_topology_file(tmp_path):
    import yaml

    write_world(6, tmp_path / "w", train_days=0.05, test_days=0.05)
    world = draw_world(6)
    written = yaml.safe_load((tmp_path / "w" / "topology.yaml").read_text())
    assert written == {caller: list(deps) for caller, deps in world.topology}
    assert main(["--seed", "6", "--train-days", "0.05", "--test-days", "0.05",
                 "--out-dir", str(tmp_path / "x"), "--topology-out", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text()) == written
