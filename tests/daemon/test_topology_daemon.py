"""The daemon's topology parts: the topology file reloaded when it changes (a bad one
refused and counted), and the bounded risk-by-dependency-edge series."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from prometheus_client import CollectorRegistry

from sentinel.config.load import parse_config
from sentinel.core.samples import Sample, decode
from sentinel.core.topology import DependencySteps
from sentinel.daemon import steps_topic
from sentinel.daemon.telemetry import Telemetry, top_edges
from sentinel.daemon.topology_watch import TopologyWatcher
from sentinel.model.artifact import load_model
from sentinel.sim import simulate
from sentinel.training.backtest import replay
from sentinel.training.train import train
from tests.testkit.daemon import BASE_CONFIG, InProcessDaemon, expected, keyed, produce, write_config
from tests.testkit.wait import wait_until

BASE = {
    "step": "10s", "window": "40s", "horizon": "20s", "features": [{"name": "qps"}],
    "failure": {"any": [{"metric": "qps", "op": ">=", "value": 1}]},
}


def _touch(path: Path, document: object, mtime_ns: int) -> None:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_changed_topology_file_is_reloaded_and_a_bad_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "topology.json"
    _touch(path, {"checkout": ["payment"]}, 1_000_000_000)
    config = parse_config({**BASE, "topology": {"cart": ["inventory"]},
                           "topology_file": str(path)})
    registry = CollectorRegistry()
    watcher = TopologyWatcher(config, registry, check_interval_seconds=5)
    assert watcher.poll(now=0.0) is None  # unchanged since start-up
    _touch(path, {"checkout": ["payment", "inventory"]}, 2_000_000_000)
    assert watcher.poll(now=1.0) is None  # not due yet: checked every 5 s
    topology = watcher.poll(now=5.0)
    assert topology is not None
    assert topology.dependencies("checkout") == ("payment", "inventory")
    assert topology.dependencies("cart") == ("inventory",)  # the inline map stays
    _touch(path, "{broken", 3_000_000_000)
    assert watcher.poll(now=10.0) is None  # refused: the topology in force stays
    assert registry.get_sample_value("sentinel_topology_reloads_total",
                                     {"outcome": "refused"}) == 1
    assert registry.get_sample_value("sentinel_topology_reloads_total",
                                     {"outcome": "applied"}) == 1
    assert watcher.poll(now=15.0) is None  # not retried until it changes again


def test_edge_series_are_bounded_and_ranked() -> None:
    deps = {f"caller{i}": (f"dep{i}", "shared") for i in range(100)}
    risks = {f"caller{i}": (100, i / 100) for i in range(100)}
    pressure = {f"dep{i}": 0.5 for i in range(100)} | {"shared": 1.0}
    edges = top_edges(risks, lambda s: deps.get(s, ()), lambda d, ts: pressure[d], limit=5)
    assert list(edges) == [(f"caller{i}", "shared") for i in (99, 98, 97, 96, 95)]
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    telemetry.set_edges(edges)
    telemetry.set_edges({("caller1", "dep1"): 0.2})  # the old edges go
    assert registry.get_sample_value("sentinel_dependency_edge_risk",
                                     {"caller": "caller99", "dependency": "shared"}) is None
    assert registry.get_sample_value("sentinel_dependency_edge_risk",
                                     {"caller": "caller1", "dependency": "dep1"}) == 0.2
    assert registry.get_sample_value("sentinel_dependency_late_total") == 0


def test_a_steps_record_round_trips_and_a_bad_one_is_refused() -> None:
    rng = np.random.default_rng(3)
    steps = DependencySteps(rng.normal(size=(1, 60, 8)).astype(np.float32),
                            (rng.random((1, 60)) > 0.5).astype(np.float32),
                            rng.random((1, 60)).astype(np.float32))
    origin, (service, ts, back) = steps_topic.decode(steps_topic.encode(("inventory", 1230, steps),
                                                                        "r1"))
    assert (origin, service, ts) == ("r1", "inventory", 1230) and back is not None
    for name in ("prepared", "failing", "pressure"):
        np.testing.assert_array_equal(getattr(back, name), getattr(steps, name))
    assert steps_topic.decode(steps_topic.encode(("cart", 10, None), "r2")) == ("r2",
                                                                               ("cart", 10, None))
    for bad in (b"{", b'{"v": 2}', b'{"v": 1, "origin": "x", "service": "a"}'):
        with pytest.raises(ValueError, match="not a dependency step record"):
            steps_topic.decode(bad)


# --- one replica on a real broker: live == backtest with a topology model ---------------------

@pytest.fixture(scope="module")
def topology_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """(model dir, topology file, alert threshold): a small LSTM trained with the simulator's
    topology on a day of 6 services; the threshold gives the test stream the most transitions."""
    root = tmp_path_factory.mktemp("topology-model")
    history, topology = root / "history.jsonl", root / "topology.yaml"
    simulate.write_jsonl(simulate.simulate(services=6, days=1, seed=9).samples, history)
    simulate.write_topology(simulate.topology(6), topology)
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["training"] = {"epochs": 2, "lstm_units": [8, 4], "negative_stride": 4,
                       "validation_fraction": 0.3}
    raw["topology_file"] = str(topology)
    config = parse_config(raw)
    train(config, [history], root / "model")
    model = load_model(root / "model", config)
    assert model.scorer.context.providers == ("topology",)
    samples = [s for s in (decode(json.dumps(x)) for x in TOPOLOGY_STREAM) if isinstance(s, Sample)]
    risks = [s.risk for s in replay(config, model.scorer, samples,
                                    config.alerting.resolved(0.5)).scores]
    candidates = [round(float(t), 4) for t in np.quantile(risks, np.linspace(0.5, 0.98, 13))]
    threshold = max(candidates, key=lambda t: len(replay(config, model.scorer, samples,
                                                         config.alerting.resolved(t)).transitions))
    return root / "model", topology, threshold


TOPOLOGY_STREAM = simulate.simulate(services=6, days=0.2, seed=5).samples


@pytest.mark.slow
def test_one_replica_with_a_topology_alerts_as_the_backtest_does(kafka_broker, topology_model,
                                                                 tmp_path, receiver):
    model_dir, topology, threshold = topology_model
    kafka_broker.create_topic("metrics", partitions=1)
    path, _ = write_config(tmp_path / "sentinel.yaml", bootstrap=kafka_broker.bootstrap,
                           topic="metrics", model_dir=model_dir, state_dir=tmp_path / "state",
                           threshold=threshold, webhook_port=receiver.port)
    raw = yaml.safe_load(path.read_text())
    raw["topology_file"] = str(topology)
    path.write_text(yaml.safe_dump(raw))
    config = parse_config(raw, str(path))
    want = expected(config, model_dir, TOPOLOGY_STREAM)
    assert want.transitions, "the stream must cause alert transitions for this test to mean much"
    produced = produce(kafka_broker.bootstrap, "metrics", keyed(TOPOLOGY_STREAM))
    daemon = InProcessDaemon(config).start()
    try:
        wait_until(lambda: daemon.metric("sentinel_samples_total") == produced, 60,
                   "every sample consumed")
        wait_until(lambda: len(receiver.received) >= len(want.transitions), 30,
                   lambda: f"{len(want.transitions)} deliveries, got {len(receiver.received)}")
        late = daemon.metric("sentinel_dependency_late_total")
    finally:
        assert daemon.stop() == 0
    alerts = [r.json()["alerts"][0] for r in receiver.received]  # type: ignore[index]
    got = sorted((a["labels"]["service"], a["status"],
                  _unix(a["startsAt"] if a["status"] == "firing" else a["endsAt"]),
                  a["annotations"].get("cause_service")) for a in alerts)
    assert got == sorted((t.service, t.state, t.ts, t.cause_service) for t in want.transitions)
    # one partition, read in order: a dependency is late live only where it is in the file
    # too (the simulator's exporter gaps), and the counter says how often
    backtest = replay(config, load_model(model_dir, config).scorer,
                      [s for s in (decode(json.dumps(x)) for x in TOPOLOGY_STREAM)
                       if isinstance(s, Sample)], config.alerting.resolved(threshold))
    assert late == sum(s.late_dependencies for s in backtest.scores)


# --- three replicas on a real broker: dependencies on other replicas (kafka.steps_topic) -------

# every caller on another partition than its dependencies: checkout -> payment, inventory;
# cart -> inventory; gateway -> catalog (simulate.topology(6))
PARTITION = {"inventory": 0, "payment": 0, "checkout": 1, "catalog": 1, "cart": 2, "gateway": 2}
WAIT_SECONDS = 300  # stream.dependency_wait in the test: the pacing below stays well within it


def _produce_paced(bootstrap: str, topic: str, samples: list[dict], steps_per_batch: int = 6,
                   pause_seconds: float = 0.2) -> int:
    """Each service to its partition, `steps_per_batch` steps of event time at a time: the
    replicas read the stream about together, as live (a backlog read at full speed would let
    one replica run minutes of event time ahead of another: docs/topology.md)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    first = samples[0]["ts"]
    batch = -1
    for sample in samples:
        if (sample["ts"] - first) // (10 * steps_per_batch) != batch:
            producer.flush()
            time.sleep(pause_seconds)
            batch = (sample["ts"] - first) // (10 * steps_per_batch)
        producer.send(topic, key=sample["service"].encode(), partition=PARTITION[sample["service"]],
                      value=json.dumps(sample, separators=(",", ":")).encode())
    producer.flush()
    producer.close()
    return len(samples)


def _assigned(daemon: InProcessDaemon) -> list[int]:
    source = daemon.app.daemon._source
    return source.assignment() if source is not None else []


@pytest.mark.slow
def test_three_replicas_score_a_caller_with_its_dependencies_from_other_replicas(
        kafka_broker, topology_model, tmp_path, receiver):
    model_dir, topology, threshold = topology_model
    kafka_broker.create_topic("metrics", partitions=3)
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic("metrics.steps", 3, 1,
                                  topic_configs={"cleanup.policy": "compact"})])
    admin.close()
    configs = []
    for name in ("r1", "r2", "r3"):
        path, _ = write_config(tmp_path / f"{name}.yaml", bootstrap=kafka_broker.bootstrap,
                               topic="metrics", model_dir=model_dir,
                               state_dir=tmp_path / f"{name}-state", threshold=threshold,
                               webhook_port=receiver.port, kafka={"steps_topic": "metrics.steps"},
                               stream={"dependency_wait": f"{WAIT_SECONDS}s"})
        raw = yaml.safe_load(path.read_text())
        raw["topology_file"] = str(topology)
        path.write_text(yaml.safe_dump(raw))
        configs.append(parse_config(raw, str(path)))
    config = configs[0]
    stream = sorted(TOPOLOGY_STREAM, key=lambda s: s["ts"])
    want = expected(config, model_dir, stream)
    assert any(t.cause_service for t in want.transitions), "the stream must name a dependency"
    backtest = replay(config, load_model(model_dir, config).scorer,
                      [s for s in (decode(json.dumps(x)) for x in stream) if isinstance(s, Sample)],
                      config.alerting.resolved(threshold))
    daemons = [InProcessDaemon(c).start() for c in configs]
    try:
        wait_until(lambda: sorted(len(_assigned(d)) for d in daemons) == [1, 1, 1], 60,
                   lambda: f"one partition each, got {[_assigned(d) for d in daemons]}")
        owner = {_assigned(d)[0]: d for d in daemons}
        produced = _produce_paced(kafka_broker.bootstrap, "metrics", stream)
        total = lambda name: sum(d.metric(name) for d in daemons)  # noqa: E731
        wait_until(lambda: total("sentinel_samples_total") == produced, 120,
                   lambda: f"every sample consumed: {total('sentinel_samples_total')}/{produced}")
        wait_until(lambda: len(receiver.received) >= len(want.transitions), 30,
                   lambda: f"{len(want.transitions)} deliveries, got {len(receiver.received)}")
        time.sleep(1.0)  # nothing more may come
        alerts = [r.json()["alerts"][0] for r in receiver.received]  # type: ignore[index]
        got = sorted((a["labels"]["service"], a["status"],
                      _unix(a["startsAt"] if a["status"] == "firing" else a["endsAt"]),
                      a["annotations"].get("cause_service")) for a in alerts)
        assert got == sorted((t.service, t.state, t.ts, t.cause_service)
                             for t in want.transitions)
        # every dependency step the callers needed came from another replica in time: late
        # only where the file has it late too (exporter gaps), at most as often
        assert total("sentinel_dependency_late_total") <= sum(
            s.late_dependencies for s in backtest.scores)

        # the replica of inventory and payment stops publishing (its consumer goes on, so no
        # rebalance): checkout's and cart's steps are scored without them after the wait
        silent = owner[0].app.daemon
        assert silent._steps is not None
        silent._steps.publish = lambda steps: None  # type: ignore[method-assign]
        callers = owner[1]  # checkout (and catalog, which gateway on owner[2] depends on)
        late_before = callers.metric("sentinel_dependency_late_total")
        span = stream[-1]["ts"] - stream[0]["ts"] + 10
        more = [{**s, "ts": s["ts"] + span} for s in stream
                if s["ts"] < stream[0]["ts"] + 2400]  # 40 minutes more, on the same grid
        produced += _produce_paced(kafka_broker.bootstrap, "metrics", more)
        wait_until(lambda: total("sentinel_samples_total") == produced, 120,
                   "the second part consumed")
        checkout_steps = len({s["ts"] for s in more if s["service"] == "checkout"})
        window_steps, wait_steps = config.window_steps, WAIT_SECONDS // 10
        # checkout's windows are scored with payment and inventory neutral, counted twice each;
        # (its first windows of the second part may lack data to be scored at all)
        wait_until(lambda: callers.metric("sentinel_dependency_late_total") - late_before
                   >= 2 * (checkout_steps - window_steps - wait_steps - 6), 30,
                   lambda: "late counted: "
                   f"{callers.metric('sentinel_dependency_late_total') - late_before}")
        # ... and the caller is not stalled: at most the wait's steps held
        assert callers.app.daemon.pipeline.gate.held <= 2 * (wait_steps + 2)
        assert callers.metric("sentinel_dependency_steps_behind_seconds") >= 2400 - WAIT_SECONDS
    finally:
        for daemon in daemons:
            assert daemon.stop() == 0


def _unix(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())
