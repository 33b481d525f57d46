"""Retraining on recent history: the model registry, hot swap, the history store, the
validation gate, the training child, and a live daemon that retrains and swaps without a gap.

Models are the session's small one (conftest `trained`), copied under new version names;
training in a child uses 1-2 epochs of 8/4 units on simulated hours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from daemon_kit import BASE_CONFIG, STREAM
from prometheus_client import CollectorRegistry

from sentinel.cli import main
from sentinel.config import Config, parse_config
from sentinel.daemon import Daemon
from sentinel.errors import ModelError
from sentinel.health import HealthState
from sentinel.hotswap import ModelWatcher
from sentinel.kafka_io import Record
from sentinel.model import CHECKSUMS, METADATA, WEIGHTS, load_model, save_model
from sentinel.pipeline import Pipeline
from sentinel.registry import POINTER, VERSIONS, ModelRegistry
from sentinel.telemetry import Telemetry

CONFIG = parse_config(yaml.safe_load(BASE_CONFIG.read_text()), str(BASE_CONFIG))


def version_name(i: int) -> str:
    return f"20250101T{i:06d}Z-{i:08x}"


def artifact(trained: tuple[Path, float], dest: Path, version: str,
             operating_threshold: float | None = None) -> Path:
    """A copy of the session model under another version name (checksums kept consistent)."""
    shutil.copytree(trained[0], dest)
    metadata = json.loads((dest / METADATA).read_text())
    metadata["version"] = version
    if operating_threshold is not None:
        metadata["operating_threshold"] = operating_threshold
    (dest / METADATA).write_text(json.dumps(metadata, indent=1, sort_keys=True))
    sums = json.loads((dest / CHECKSUMS).read_text())
    sums[METADATA] = hashlib.sha256((dest / METADATA).read_bytes()).hexdigest()
    (dest / CHECKSUMS).write_text(json.dumps(sums, indent=1))
    return dest


def tamper(model_dir: Path) -> None:
    with (model_dir / WEIGHTS).open("r+b") as weights:
        weights.seek(200)
        weights.write(b"tampered")


@pytest.fixture
def registry(trained, tmp_path) -> ModelRegistry:
    """A registry with versions 1 and 2 added, 1 promoted."""
    reg = ModelRegistry(tmp_path / "models", keep_versions=3)
    for i in (1, 2):
        reg.add(artifact(trained, tmp_path / f"src{i}", version_name(i), 0.3 + 0.1 * i))
    reg.promote(version_name(1), CONFIG)
    return reg


# --- registry -----------------------------------------------------------------------------

def test_promote_and_rollback_switch_the_pointer_and_remember_the_order(registry):
    v1, v2 = version_name(1), version_name(2)
    assert [(v.version, v.current) for v in registry.versions()] == [(v1, True), (v2, False)]

    registry.promote(v2, CONFIG)
    assert registry.current().version == v2
    assert registry.current().path == registry.root / VERSIONS / v2
    assert registry.pointer()["previous"] == [v1]

    registry.rollback(CONFIG)
    assert registry.current().version == v1
    with pytest.raises(ModelError, match="no earlier version"):
        registry.rollback(CONFIG)


def test_the_pointer_is_replaced_atomically_and_leaves_no_temporary_file(registry):
    pointer = registry.root / POINTER
    inode = pointer.stat().st_ino
    registry.promote(version_name(2), CONFIG)
    assert pointer.stat().st_ino != inode  # a new file renamed over the old one, not rewritten
    assert json.loads(pointer.read_text())["version"] == version_name(2)
    assert sorted(p.name for p in registry.root.iterdir()) == [".lock", POINTER, VERSIONS]


def test_pruning_keeps_the_newest_versions_the_current_one_and_its_rollback_target(registry,
                                                                                    trained,
                                                                                    tmp_path):
    for i in range(3, 7):
        registry.add(artifact(trained, tmp_path / f"src{i}", version_name(i)))
    registry.promote(version_name(2), CONFIG)  # prunes: keep 3 newest + current + previous

    assert [v.version for v in registry.versions()] == [version_name(i) for i in (1, 2, 4, 5, 6)]
    registry.promote(version_name(6), CONFIG)
    assert [v.version for v in registry.versions()] == [version_name(i) for i in (2, 4, 5, 6)]
    registry.rollback(CONFIG)
    assert registry.current().version == version_name(2)


def test_a_tampered_version_is_refused_at_promotion_and_the_pointer_stays(registry):
    tamper(registry.root / VERSIONS / version_name(2))
    with pytest.raises(ModelError, match=r"checksum of model\.weights\.h5 does not match"):
        registry.promote(version_name(2), CONFIG)
    assert registry.current().version == version_name(1)


def test_a_single_model_directory_is_served_as_before_and_not_managed(trained, tmp_path):
    single = ModelRegistry(trained[0])
    assert single.is_single_model and not single.is_registry
    assert single.current().path == trained[0]
    with pytest.raises(ModelError, match="single model directory"):
        single.promote("anything", CONFIG)


def test_training_over_a_registry_is_refused(registry):
    with pytest.raises(ModelError, match="is a model registry"):
        save_model(None, None, {}, registry.root)
    assert registry.current().version == version_name(1)


@pytest.fixture
def logging_restored():
    """`main()` points the root logger at the test's captured stderr: put it back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_models_cli_lists_promotes_imports_and_rolls_back(trained, tmp_path, capsys,
                                                          logging_restored):
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["model"] = {"path": str(tmp_path / "models")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = str(tmp_path / "c.yaml")

    assert main(["models", "promote", str(trained[0]), "--config", cfg]) == 0  # imported
    first = json.loads(capsys.readouterr().out)["current"]
    assert (trained[0] / METADATA).is_file()  # the source directory is copied, not moved
    artifact(trained, tmp_path / "models" / VERSIONS / version_name(9), version_name(9))
    assert main(["models", "promote", version_name(9), "--config", cfg]) == 0
    assert json.loads(capsys.readouterr().out) == {"current": version_name(9), "previous": [first]}

    assert main(["models", "list", "--json", "--config", cfg]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["current"]) for v in listed] == [(version_name(9), True),
                                                              (first, False)]
    assert listed[1]["pr_auc"] is not None

    assert main(["models", "rollback", "--config", cfg]) == 0
    assert json.loads(capsys.readouterr().out)["current"] == first
    assert main(["models", "promote", "nope", "--config", cfg]) == 2
    assert "no version 'nope'" in capsys.readouterr().err


# --- hot swap in the loop -------------------------------------------------------------------

class ListSource:
    """An in-memory stand-in for KafkaSource: each poll returns the next list of records."""

    def __init__(self) -> None:
        self.polls: list[list[Record]] = []
        self.committed: dict[int, int] = {}

    def poll(self) -> list[Record]:
        return self.polls.pop(0) if self.polls else []

    def commit(self, next_offsets: dict[int, int]) -> None:
        self.committed.update(next_offsets)

    def assignment(self) -> list[int]:
        return [0]

    def lag(self) -> dict[int, int]:
        return {0: 0}

    def close(self) -> None:
        pass


class NullNotifier:
    def submit(self, transition) -> None:
        pass

    def adopt(self, transition) -> None:
        pass

    def forget(self, services) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Loop:
    daemon: Daemon
    source: ListSource
    clock: Clock
    metrics: CollectorRegistry
    scored: list[tuple[str, int]]
    offset: int = 0

    def feed(self, samples: list[dict]) -> None:
        records = [Record(0, self.offset + i, s["service"].encode(), json.dumps(s).encode(), False)
                   for i, s in enumerate(samples)]
        self.offset += len(records)
        self.source.polls.append(records)
        self.daemon.run_once()

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.get_sample_value(name, labels)


def make_loop(config: Config, registry: ModelRegistry, history=None) -> Loop:
    """The real Daemon, Pipeline and ModelWatcher over an in-memory source, clock passed in."""
    metrics, clock, source = CollectorRegistry(), Clock(), ListSource()
    current = registry.current()
    model = load_model(current.path, config) if current else None
    pipeline = Pipeline(config, model.scorer if model else None,
                        model.alerting(config) if model else None)
    scored: list[tuple[str, int]] = []
    process = pipeline.process

    def recording(samples):
        result = process(samples)
        scored.extend((s.service, s.ts) for s in result.scores)
        return result

    pipeline.process = recording  # type: ignore[method-assign]
    telemetry = Telemetry(metrics)
    if model is not None:
        telemetry.set_model(model.version, model.written_ts(), time.time,
                            model.alerting(config).threshold)
    health = HealthState(30.0, clock)
    health.set_check("model", model is not None, "initial")
    watcher = ModelWatcher(registry, config, model, metrics, check_interval_seconds=5.0)
    daemon = Daemon(config, pipeline, lambda revoked, assigned: source, NullNotifier(),
                    telemetry, health, clock=clock, wall_clock=lambda: STREAM[-1]["ts"] + 3600,
                    history=history, models=watcher)
    return Loop(daemon, source, clock, metrics, scored)


def swap_after_check(loop: Loop) -> None:
    """Let the check interval pass, poll once (the load starts), wait for it in the background."""
    loop.clock.now += 5.0
    loop.feed([])
    loop.daemon.models.wait_loaded(30)


def contiguous(scored: list[tuple[str, int]]) -> bool:
    by_service: dict[str, list[int]] = {}
    for service, ts in scored:
        by_service.setdefault(service, []).append(ts)
    return all(np.all(np.diff(ts) == CONFIG.step_seconds) for ts in by_service.values())


def test_a_promoted_model_is_swapped_in_between_polls_without_skipping_a_window(registry):
    loop = make_loop(CONFIG, registry)
    clean = [s for s in STREAM[:1500] if s["service"] == "gateway"]  # no defects early on
    loop.feed(clean[:200])
    assert loop.metric("sentinel_model_info", version=version_name(1)) == 1
    before = len(loop.scored)
    assert before > 100

    registry.promote(version_name(2), CONFIG)
    swap_after_check(loop)
    assert loop.daemon.pipeline.alerts.config.threshold == pytest.approx(0.4)  # not yet
    loop.feed(clean[200:400])

    assert loop.daemon.pipeline.alerts.config.threshold == pytest.approx(0.5)  # v2's threshold
    assert loop.metric("sentinel_model_info", version=version_name(2)) == 1
    assert loop.metric("sentinel_model_info", version=version_name(1)) is None
    assert loop.metric("sentinel_alert_threshold") == pytest.approx(0.5)
    assert loop.metric("sentinel_model_swaps_total", outcome="swapped") == 1
    assert len(loop.scored) > before + 150
    assert contiguous(loop.scored)  # no window skipped or scored twice across the swap


def test_a_tampered_promoted_model_is_refused_and_the_model_in_service_keeps_serving(registry):
    loop = make_loop(CONFIG, registry)
    clean = [s for s in STREAM[:1500] if s["service"] == "gateway"]
    loop.feed(clean[:100])
    serving = loop.daemon.pipeline.model

    registry.promote(version_name(2), CONFIG)
    tamper(registry.root / VERSIONS / version_name(2))  # after its promotion: found at load
    swap_after_check(loop)
    loop.feed(clean[100:200])
    swap_after_check(loop)  # not tried again while the pointer stays
    loop.feed(clean[200:300])

    assert loop.daemon.pipeline.model is serving
    assert loop.metric("sentinel_model_swaps_total", outcome="refused") == 1
    assert loop.metric("sentinel_model_info", version=version_name(1)) == 1
    assert contiguous(loop.scored) and len(loop.scored) > 250


def test_without_a_model_the_first_promoted_one_makes_the_daemon_ready(trained, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    loop = make_loop(CONFIG, registry)
    clean = [s for s in STREAM[:1500] if s["service"] == "gateway"]
    loop.feed(clean[:100])
    assert not loop.scored and not loop.daemon.health.readiness()[0]

    registry.add(artifact(trained, tmp_path / "src", version_name(1)))
    registry.promote(version_name(1), CONFIG)
    swap_after_check(loop)
    loop.feed(clean[100:200])

    assert loop.scored[0][1] < clean[100]["ts"]  # the windows were kept full meanwhile
    assert contiguous(loop.scored)
    assert loop.daemon.health.readiness()[1]["checks"]["model"]["ok"]
