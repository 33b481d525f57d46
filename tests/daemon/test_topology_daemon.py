"""The daemon's topology parts: the topology file reloaded when it changes (a bad one
refused and counted), and the bounded risk-by-dependency-edge series."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from sentinel.config.load import parse_config
from sentinel.daemon.telemetry import Telemetry, top_edges
from sentinel.daemon.topology_watch import TopologyWatcher

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
