"""Retraining on recent history: the model registry, hot swap, the history store, the
validation gate, the training child, and a live daemon that retrains and swaps without a gap.

Models are the session's small one (conftest `trained`), copied under new version names;
training in a child uses 1-2 epochs of 8/4 units on simulated hours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from sentinel.cli import main
from sentinel.config.load import parse_config
from sentinel.config.schema import Config
from sentinel.core.incidents import episode_key
from sentinel.core.pipeline import Pipeline
from sentinel.core.samples import Sample, decode
from sentinel.daemon.daemon import Daemon
from sentinel.daemon.health import HealthState
from sentinel.daemon.history_store import find_corrupt
from sentinel.daemon.hotswap import ModelWatcher
from sentinel.daemon.kafka_io import Record
from sentinel.daemon.telemetry import Telemetry
from sentinel.errors import ConfigError, ModelError
from sentinel.model.artifact import CHECKSUMS, METADATA, WEIGHTS, load_model, save_model
from sentinel.retrain.registry import POINTER, VERSIONS, ModelRegistry
from sentinel.retrain.scheduler import Retrainer
from sentinel.runner import App
from sentinel.sim import simulate
from sentinel.training.backtest import replay
from sentinel.training.history import label, read_series, series_from_buckets
from tests.testkit.broker import free_port
from tests.testkit.clock import FakeClock
from tests.testkit.daemon import BASE_CONFIG, STREAM, InProcessDaemon, expected, keyed, produce, write_config
from tests.testkit.history import CONFIG, T0, store_at, synthetic
from tests.testkit.wait import wait_until


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


def test_models_cli_lists_promotes_imports_and_rolls_back(trained, tmp_path, capsys):
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
    assert listed[1]["labels"] == "rule"
    assert listed[1]["feedback"] == {"false_alarm": 0, "confirmed": 0, "windows": 0}
    assert main(["models", "list", "--config", cfg]) == 0
    assert "labels rule  feedback used 0 false alarm(s), 0 confirmed (0 windows)" in \
        capsys.readouterr().out

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

    def commit(self, next_offsets: dict[int, int], hints: dict[int, int] | None = None) -> None:
        self.committed.update(next_offsets)

    def assignment(self) -> list[int]:
        return [0]

    def lag(self) -> dict[int, int]:
        return {0: 0}

    def close(self) -> None:
        pass


class NullNotifier:
    problem = None

    def unsaved(self) -> int:
        return 0

    def submit(self, transition) -> None:
        pass

    def adopt(self, transition) -> None:
        pass

    def refresh(self, transitions) -> None:
        pass

    def forget(self, services) -> None:
        pass


@dataclass
class Loop:
    daemon: Daemon
    source: ListSource
    clock: FakeClock
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
    metrics, clock, source = CollectorRegistry(), FakeClock(), ListSource()
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
    loop.clock.advance(5.0)
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
    assert contiguous(loop.scored) and len(loop.scored) > 200


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


def buckets_of(samples: list[dict], config: Config = CONFIG, chunk: int = 500) -> list:
    """The buckets the daemon's pipeline closes on `samples`, poll by poll (no model)."""
    pipeline = Pipeline(config, None)
    decoded = [decode(json.dumps(s)) for s in samples]
    good = [s for s in decoded if isinstance(s, Sample)]
    out = []
    for i in range(0, len(good), chunk):
        out += pipeline.process(good[i: i + chunk]).buckets
    return out


def test_closed_buckets_read_back_through_train_s_reader_as_the_pipeline_closed_them(tmp_path):
    buckets = buckets_of(STREAM[:4000])
    store = store_at(tmp_path / "history")
    for i in range(0, len(buckets), 300):  # as the polls came
        store.append(buckets[i: i + 300])
    store.close()

    names = sorted(p.name for p in (tmp_path / "history").iterdir())
    assert names == ["20251124T00-r1.jsonl", "20251124T01-r1.jsonl", "20251124T02-r1.jsonl",
                     "20251124T03-r1.jsonl"]
    read, stats = read_series([tmp_path / "history"], CONFIG)
    assert not stats.rejected and not stats.late
    want = series_from_buckets(buckets, CONFIG.step_seconds)
    assert read.keys() == want.keys()
    for service, series in read.items():
        assert series.first_ts == want[service].first_ts
        n = len(series.values)  # trailing empty steps are no lines
        np.testing.assert_array_equal(series.values, want[service].values[:n])
        assert np.isnan(want[service].values[n:]).all()
    assert store.span() == (min(b.ts for b in buckets if not b.is_gap),
                            max(b.ts for b in buckets if not b.is_gap))


def test_retention_deletes_segments_past_the_age_then_the_oldest_beyond_the_size(tmp_path):
    metrics = CollectorRegistry()
    store = store_at(tmp_path, metrics, retention_seconds=2 * 3600.0)
    for hour in range(5):
        store.append([synthetic("cart", T0 + hour * 3600 + 10 * i) for i in range(10)])
    assert sorted(p.name[:11] for p in tmp_path.iterdir()) == [
        "20251124T02", "20251124T03", "20251124T04"]  # ended more than 2 h before the newest
    assert metrics.get_sample_value("sentinel_history_pruned_segments_total",
                                    {"reason": "age"}) == 2

    segment_bytes = (tmp_path / "20251124T04-r1.jsonl").stat().st_size
    store.max_bytes = int(2.5 * segment_bytes)
    store.append([synthetic("cart", T0 + 4 * 3600 + 200)])
    assert sorted(p.name[:11] for p in tmp_path.iterdir()) == ["20251124T03", "20251124T04"]
    assert metrics.get_sample_value("sentinel_history_pruned_segments_total",
                                    {"reason": "size"}) == 1
    assert metrics.get_sample_value("sentinel_history_bytes") == sum(
        p.stat().st_size for p in tmp_path.iterdir())


def test_a_restart_reopens_the_segments_and_cuts_a_torn_last_line(tmp_path):
    store = store_at(tmp_path)
    store.append([synthetic("cart", T0 + 10 * i) for i in range(20)])
    store.close()
    segment = tmp_path / "20251124T00-r1.jsonl"
    with segment.open("ab") as handle:
        handle.write(b'{"service":"cart","ts":17639426')  # the crash came mid-write

    reopened = store_at(tmp_path)
    assert reopened.span() == (T0, T0 + 190)
    reopened.append([synthetic("cart", T0 + 200)])
    reopened.close()
    series, stats = read_series([tmp_path], CONFIG)
    assert not stats.rejected
    assert series["cart"].last_ts == T0 + 200 and len(series["cart"].values) == 21


def test_a_corrupt_segment_is_found_set_aside_and_counted_and_the_rest_still_reads(tmp_path,
                                                                                   caplog):
    metrics = CollectorRegistry()
    store = store_at(tmp_path, metrics)
    for hour in range(3):
        store.append([synthetic("cart", T0 + hour * 3600 + 10 * i) for i in range(5)])
    middle = tmp_path / "20251124T01-r1.jsonl"
    middle.write_bytes(middle.read_bytes()[:40] + b"\x00\xff garbage \n" + middle.read_bytes()[40:])

    corrupt = find_corrupt(tmp_path)
    assert [(name, line) for name, line, _ in corrupt] == [(middle.name, 1)]
    with caplog.at_level(logging.ERROR, "sentinel.daemon.history_store"):
        store.quarantine([name for name, _, _ in corrupt])
    assert (tmp_path / (middle.name + ".corrupt")).is_file() and not middle.exists()
    assert metrics.get_sample_value("sentinel_history_corrupt_segments_total") == 1
    assert "is corrupt" in caplog.text
    _, stats = read_series([tmp_path], CONFIG)
    assert not stats.rejected and stats.samples == 10  # the two good segments, whole


def test_a_full_disk_is_counted_shown_as_degraded_and_scoring_goes_on(registry, tmp_path):
    metrics = CollectorRegistry()
    store = store_at(tmp_path / "history", metrics)
    clean = [s for s in STREAM[:1500] if s["service"] == "gateway"]
    for hour_ts in {int(s["ts"]) // 3600 * 3600 for s in clean}:
        (tmp_path / "history" / store.segment_name(hour_ts)).symlink_to("/dev/full")
    loop = make_loop(CONFIG, registry, history=store)

    loop.feed(clean[:200])
    assert len(loop.scored) > 100  # scored all the same
    assert metrics.get_sample_value("sentinel_history_write_errors_total") >= 1
    ready, body = loop.daemon.health.readiness()
    assert ready and body["status"] == "ready, degraded"
    assert "No space left on device" in body["degraded"]["history"]

    for link in (tmp_path / "history").iterdir():
        link.unlink()  # space again
    loop.feed(clean[200:300])
    ready, body = loop.daemon.health.readiness()
    assert ready and body["degraded"] == {} and body["status"] == "ready"
    assert read_series([tmp_path / "history"], CONFIG)[1].samples > 0


# --- retraining runs --------------------------------------------------------------------------

# Three services for half a day (seed 1): failures at 4.9 h, 7.7 h (two) and 8.9 h. The
# first 10 h are history; with a 3 h holdout the candidate trains on 0-7 h (one failure) and
# is graded on 7-10 h (three).
SALE_DAY = simulate.simulate(services=3, days=0.5, seed=1).samples
HISTORY_HOURS = 10


def retrain_config(tmp_path: Path, trained, **retrain) -> tuple[Path, Config]:
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["model"] = {"path": str(tmp_path / "models"), "check_interval": "0.2s"}
    raw["state"] = {"dir": str(tmp_path / "state")}
    raw["training"] = {"epochs": 4, "lstm_units": [8, 4], "negative_stride": 4,
                       "validation_fraction": 0.2}
    raw["retrain"] = {"enabled": True, "schedule": "interval 1h", "min_history": "6h",
                      "holdout": "3h", "margin": 0.0, **retrain}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, parse_config(raw, str(path))


@pytest.fixture(scope="module")
def recorded_history(tmp_path_factory) -> Path:
    """The first HISTORY_HOURS of SALE_DAY as the daemon's history store records them."""
    directory = tmp_path_factory.mktemp("history") / "history"
    store = store_at(directory)
    store.append(buckets_of([s for s in SALE_DAY if s["ts"] < T0 + HISTORY_HOURS * 3600]))
    store.close()
    return directory


def retrainer_for(config: Config, history: Path, **options) -> tuple[Retrainer, CollectorRegistry]:
    directory = Path(config.state.dir) / "history"
    shutil.copytree(history, directory)
    metrics = CollectorRegistry()
    registry = ModelRegistry(config.model.path, config.model.keep_versions)
    return Retrainer(config, registry, store_at(directory), registry.current, metrics,
                     **options), metrics


def leftovers(config: Config) -> list[str]:
    incoming = Path(config.model.path) / ".incoming"
    return sorted(str(p.relative_to(incoming)) for p in incoming.rglob("*")) if incoming.exists() \
        else []


@pytest.mark.slow
def test_the_first_model_is_trained_then_a_no_skill_candidate_is_rejected_by_the_gate(
        trained, tmp_path, recorded_history):
    _, config = retrain_config(tmp_path, trained)
    first, metrics = retrainer_for(config, recorded_history)

    outcome = first.run_once()
    assert outcome == "promoted", first.last.reason  # no model in service yet: a cold start
    registry = first.registry
    serving = registry.current()
    metadata = json.loads((serving.path / METADATA).read_text())
    holdout_from = first.last.facts["holdout_from_ts"]
    assert metadata["training"]["last_ts"] < holdout_from  # never trained on the holdout
    assert first.last.facts["samples"] > 5000

    # the same history, but a candidate that predicts 0.5 everywhere: the gate says no
    first.extra_args = ["--no-skill"]  # the test-only hook of sentinel.retrain.child
    bad = first
    assert bad.run_once() == "rejected", (bad.last.reason, bad.last.facts)
    assert registry.current() == serving
    assert [v.version for v in registry.versions()] == [serving.version]
    assert leftovers(config) == []
    candidate = metrics.get_sample_value("sentinel_retrain_score", {"model": "candidate"})
    current = metrics.get_sample_value("sentinel_retrain_score", {"model": "current"})
    assert candidate < current  # the no-skill model's PR-AUC is the positive share
    assert candidate == pytest.approx(bad.last.facts["candidate"]["positive_window_share"])
    for outcome, count in (("promoted", 1), ("rejected", 1), ("failed", 0)):
        assert metrics.get_sample_value("sentinel_retrain_runs_total", {"outcome": outcome}) == count
    assert metrics.get_sample_value("sentinel_retrain_duration_seconds_count") == 2


def test_a_run_without_enough_history_is_skipped(trained, tmp_path, recorded_history):
    _, config = retrain_config(tmp_path, trained, min_history="1d")
    retrainer, metrics = retrainer_for(config, recorded_history)
    assert retrainer.run_once() == "skipped"
    assert "min_history" in retrainer.last.reason
    assert metrics.get_sample_value("sentinel_retrain_runs_total", {"outcome": "skipped"}) == 1


CRASHING_CHILD = """
import os, pathlib, sys
out = pathlib.Path(sys.argv[1])
tmp = out.parent / ".model.half"  # what save_model's temporary directory looks like midway
tmp.mkdir(parents=True)
(tmp / "model.weights.h5").write_bytes(b"half a model")
os._exit(3)
"""

HANGING_CHILD = """
import pathlib, subprocess, sys, time
out = pathlib.Path(sys.argv[1])
out.parent.mkdir(parents=True, exist_ok=True)
(out.parent / ".model.half").mkdir()
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
(out.parent.parent.parent / "grandchild.pid").write_text(str(grandchild.pid))
time.sleep(120)
"""


def fake_child(script: str):
    def command(config, history, holdout_from, out, current, threads) -> list[str]:
        return [sys.executable, "-c", script, str(out)]
    return command


@pytest.mark.parametrize(("script", "timeout", "reason"), [
    (CRASHING_CHILD, "1m", "training child exited 3"),
    (HANGING_CHILD, "1.5s", "exceeded retrain.timeout"),
], ids=["crash", "timeout"])
def test_a_child_that_crashes_or_overruns_leaves_serving_untouched_and_no_partial_files(
        trained, tmp_path, recorded_history, script, timeout, reason):
    _, config = retrain_config(tmp_path, trained, timeout=timeout)
    retrainer, metrics = retrainer_for(config, recorded_history, command=fake_child(script))
    registry = retrainer.registry
    registry.add(artifact(trained, tmp_path / "src", version_name(1)))
    registry.promote(version_name(1), CONFIG)
    pointer = (registry.root / POINTER).read_bytes()

    started = time.monotonic()
    assert retrainer.run_once() == "failed"
    assert time.monotonic() - started < 20
    assert reason in retrainer.last.reason
    assert (registry.root / POINTER).read_bytes() == pointer
    assert [v.version for v in registry.versions()] == [version_name(1)]
    assert leftovers(config) == []
    assert metrics.get_sample_value("sentinel_retrain_runs_total", {"outcome": "failed"}) == 1
    assert metrics.get_sample_value("sentinel_retrain_running") == 0
    pid_file = tmp_path / "models" / "grandchild.pid"
    if pid_file.exists():  # the whole process group was killed, not just the child
        pid = int(pid_file.read_text())
        wait_until(lambda: not Path(f"/proc/{pid}").exists()
                   or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], 5,
                   "the grandchild killed")


# --- a live daemon retrains, swaps, rolls back --------------------------------------------------

class Events(logging.Handler):
    """The structured log lines (`fields`) of the daemon's loop, in the order it logged them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if fields and fields.get("event") in ("score", "model_swap"):
            self.lines.append(dict(fields))


@pytest.fixture
def loop_events() -> Iterator[Events]:
    handler = Events()
    loggers = [logging.getLogger(name) for name in ("sentinel.daemon.daemon", "sentinel.daemon.hotswap")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)  # the daemon logs every scored window at debug
        lg.addHandler(handler)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def hours(start: float, end: float) -> list[dict]:
    return [s for s in SALE_DAY if T0 + start * 3600 <= s["ts"] < T0 + end * 3600]


@pytest.mark.slow
def test_a_running_daemon_retrains_swaps_without_a_gap_and_serves_the_rollback(
        kafka_broker, trained, tmp_path, loop_events):
    kafka_broker.create_topic("metrics", partitions=1)
    registry = ModelRegistry(tmp_path / "models")
    first = registry.add(artifact(trained, tmp_path / "src", version_name(1)))
    registry.promote(first, CONFIG)
    path, config = write_config(tmp_path / "sentinel.yaml", bootstrap=kafka_broker.bootstrap,
                                topic="metrics", model_dir=registry.root,
                                state_dir=tmp_path / "state", threshold=0.5)
    raw = yaml.safe_load(path.read_text())
    raw["alerting"]["threshold"] = "auto"
    raw["model"]["check_interval"] = "0.2s"
    raw["training"] = {"epochs": 1, "lstm_units": [8, 4], "negative_stride": 4,
                       "validation_fraction": 0.2}
    # a short schedule, and a margin any fair candidate passes; min_history: a run trains
    # once the history holds the failure at 4.9 h before its holdout
    raw["retrain"] = {"enabled": True, "schedule": "interval 2s", "min_history": "9.5h",
                      "holdout": "3h", "margin": 1.0}
    path.write_text(yaml.safe_dump(raw))
    config = parse_config(raw, str(path))
    parts = [hours(0, HISTORY_HOURS), hours(10, 10.7), hours(10.7, 11.4), hours(11.4, 12)]
    daemon = InProcessDaemon(config).start()
    retrainer = daemon.app.retrainer
    consumed = 0

    def stream(samples: list[dict], pace_seconds: float = 0.0) -> None:
        nonlocal consumed
        chunk = 40 if pace_seconds else len(samples)
        for i in range(0, len(samples), chunk):
            produce(kafka_broker.bootstrap, "metrics", keyed(samples[i: i + chunk]))
            time.sleep(pace_seconds)
        consumed += len(samples)
        wait_until(lambda: daemon.metric("sentinel_samples_total") == consumed, 60,
                   "every sample consumed")

    def serving(version: str) -> bool:
        return daemon.metric("sentinel_model_info", version=version) == 1

    try:
        stream(parts[0])
        # retraining runs while the stream goes on
        live = threading.Thread(target=stream, args=(parts[1], 0.3))
        live.start()
        wait_until(lambda: daemon.metric("sentinel_retrain_runs_total", outcome="promoted"), 120,
                   lambda: f"a promotion; last run: {retrainer.last}")
        retrainer.scheduler.pause()
        wait_until(lambda: not retrainer.busy, 60, "no run in flight")
        second = registry.current().version
        assert second != first
        wait_until(lambda: serving(second), 15, "the new model served")
        live.join()
        stream(parts[2])

        assert main(["models", "rollback", "--config", str(path)]) == 0
        back = registry.current().version
        wait_until(lambda: serving(back), 15, "the rolled-back model served")
        stream(parts[3])
        assert daemon.metric("sentinel_retrain_samples") > 5000
        assert daemon.metric("sentinel_retrain_runs_total", outcome="failed") == 0
    finally:
        assert daemon.stop() == 0

    # every window the stream closes was scored exactly once, across both swaps
    scores = [e for e in loop_events.lines if e["event"] == "score" and e["live"]]
    keys = [(e["service"], e["event_ts"]) for e in scores]
    assert len(keys) == len(set(keys))
    everything = [s for part in parts for s in part]
    assert set(keys) == expected(config, registry.root / VERSIONS / first, everything).scored

    # ... each by the model in service at the time: the new one, then the rolled-back one
    swaps = [i for i, e in enumerate(loop_events.lines) if e["event"] == "model_swap"]
    assert [loop_events.lines[i]["version"] for i in swaps][-2:] == [second, back]
    good = [s for s in (decode(json.dumps(x)) for x in everything) if isinstance(s, Sample)]
    for start, end, version in ((swaps[-2], swaps[-1], second), (swaps[-1], None, back)):
        served = [e for e in loop_events.lines[start:end] if e["event"] == "score"]
        assert len(served) > 100
        model = load_model(registry.root / VERSIONS / version, config)
        want = {(s.service, s.ts): s.risk
                for s in replay(config, model.scorer, good, model.alerting(config)).scores}
        for e in served:
            assert e["risk"] == pytest.approx(want[(e["service"], e["event_ts"])], abs=1e-5)
    assert sorted(p.name for p in (tmp_path / "state" / "history").iterdir())[0] == \
        f"20251124T00-{daemon.app.history.replica}.jsonl"


def test_without_a_model_the_first_training_starts_once_the_history_suffices(trained, tmp_path,
                                                                            recorded_history):
    _, config = retrain_config(tmp_path, trained, min_history="9h")
    retrainer, _ = retrainer_for(config, recorded_history)
    runs: list[str] = []
    retrainer.run_once = lambda: runs.append("run") or "failed"  # type: ignore[method-assign]

    retrainer._cold_start()
    assert runs == ["run"]  # 10 h of history >= 9 h, no model: no need to wait for the schedule
    retrainer._cold_start()
    assert runs == ["run"]  # a failed first training is retried later, not every minute

    _, short = retrain_config(tmp_path / "short", trained, min_history="11h")
    waiting, _ = retrainer_for(short, recorded_history)
    waiting.run_once = lambda: runs.append("early") or "failed"  # type: ignore[method-assign]
    waiting._cold_start()
    assert runs == ["run"]


@pytest.mark.parametrize(("section", "value", "message"), [
    ("retrain", {"schedule": "every day"}, "retrain.schedule"),
    ("retrain", {"schedule": "interval 0s"}, "retrain.schedule"),
    ("retrain", {"schedule": "0 */6 * *"}, "a cron string has 5 fields"),
    ("retrain", {"holdout": "2d"}, "retrain.holdout"),
    ("retrain", {"metric": "f1"}, "retrain.metric"),
    ("retrain", {"margin": 2}, "retrain.margin"),
    ("history", {"max_bytes": "lots"}, "history.max_bytes"),
    ("model", {"path": "m", "keep_versions": 0}, "model.keep_versions"),
])
def test_retraining_config_errors_name_the_key(section, value, message):
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw[section] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(raw)


def test_retraining_needs_the_history_store():
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["history"], raw["retrain"] = {"enabled": False}, {"enabled": True}
    with pytest.raises(ConfigError, match=r"retrain\.enabled"):
        parse_config(raw)
    raw["history"] = {"max_bytes": "512MiB", "retention": "2d"}
    config = parse_config(raw)
    assert (config.history.max_bytes, config.history.retention_seconds) == (512 << 20, 172800)


@pytest.mark.slow
def test_a_false_alarm_marked_on_the_daemon_is_learned_by_the_next_retrain(
        trained, tmp_path, recorded_history, capsys):
    """The feedback round trip: a retrain, a replay of its training day, one of its false
    alarms marked through the daemon's POST /feedback, the next retrain, the same replay."""
    path, config = retrain_config(tmp_path, trained, margin=1.0)  # promote whatever it scores
    raw = yaml.safe_load(path.read_text())
    raw["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    path.write_text(yaml.safe_dump(raw))
    config = parse_config(raw, str(path))
    retrainer, _ = retrainer_for(config, recorded_history)
    assert retrainer.run_once() == "promoted", retrainer.last.reason
    holdout_from = retrainer.last.facts["holdout_from_ts"]
    day = [s for s in (decode(json.dumps(x)) for x in SALE_DAY)
           if isinstance(s, Sample) and s.ts < holdout_from]
    events = {s: label(x, config).events for s, x in
              read_series([retrainer.store.directory], config, holdout_from)[0].items()}

    first_model = load_model(retrainer.registry.current().path, config)
    # the operator's threshold, fixed for both replays: high enough to fire a few times a day
    risk = [s.risk for s in replay(config, first_model.scorer, day,
                                   config.alerting.resolved(0.5)).scores]
    alerting = config.alerting.resolved(float(np.quantile(risk, 0.98)))

    def firings(model_dir: Path) -> list:
        run = replay(config, load_model(model_dir, config).scorer, day, alerting)
        return [t for t in run.transitions if t.state == "firing" and t.phase == "predicted"]

    def false_alarms(fired: list) -> list:
        return [t for t in fired if not any(e.start_ts - config.horizon_seconds <= t.ts <= e.end_ts
                                            for e in events[t.service])]

    before = firings(retrainer.registry.current().path)
    marked = false_alarms(before)
    assert marked, f"no false alarm to mark among {len(before)} firings: the test needs one"
    target = marked[0]
    episode = episode_key(target.service, target.started_ts)

    app = App.create(config)
    app.server.start()
    try:
        request = urllib.request.Request(
            f"http://{config.metrics.listen}/feedback", method="POST",
            data=json.dumps({"episode": episode, "verdict": "false_alarm",
                             "note": "sale traffic, not a failure"}).encode())
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
            assert json.loads(response.read())["service"] == target.service
    finally:
        app.server.stop()

    assert retrainer.run_once() == "promoted", retrainer.last.reason
    metadata = json.loads((retrainer.registry.current().path / METADATA).read_text())
    assert metadata["training"]["feedback"]["false_alarm"] == 1
    after = firings(retrainer.registry.current().path)
    near = [t.ts for t in after if t.service == target.service
            and abs(t.ts - target.ts) <= config.horizon_seconds]
    with capsys.disabled():
        print(f"\nfeedback round trip at threshold {alerting.threshold:.3f}: {len(before)} "
              f"firings ({len(marked)} false alarms) before, "
              f"{len(after)} ({len(false_alarms(after))}) after; the marked one at "
              f"{target.ts} ({target.service}): after it, {near or 'no firing'} within one horizon")
    assert all(ts > target.ts for ts in near)  # gone, or later
