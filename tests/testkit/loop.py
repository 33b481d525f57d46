"""The daemon's run loop in-process with fakes at every port: a partitioned in-memory
source, a notifier, dead letters, a fixed-risk model and the fake clock.

    >>> loop = make_loop(risk=0.9)
    >>> loop.feed(*(rec(i) for i in range(5)))   # one poll; run_once()
    >>> loop.notifier.submitted
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry

from sentinel.config.load import parse_config
from sentinel.core.pipeline import Pipeline
from sentinel.daemon.daemon import Daemon
from sentinel.daemon.health import HealthState
from sentinel.daemon.kafka_io import KafkaUnavailable, Record
from sentinel.daemon.telemetry import Telemetry
from tests.testkit.clock import FakeClock

# --- the loop with small fakes: no broker, no TensorFlow, time passed in -----------------------

UNIT_CONFIG = {
    "step": "10s", "window": "30s", "horizon": "10s", "features": [{"name": "qps"}],
    "failure": {"any": [{"metric": "qps", "op": ">", "value": 1e9}]},
    "alerting": {"threshold": 0.5, "for_steps": 1, "resolve_steps": 1, "cooldown": 0},
    "stream": {"allowed_lateness": 0, "silence": "60s", "max_services": 2},
}
T0 = 1_763_899_200


class FixedRisk:
    def __init__(self, risk: float) -> None:
        self.risk = risk

    def score(self, windows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        return np.full(len(windows), self.risk)


class FakeSource:
    """An in-memory partitioned log standing in for KafkaSource."""

    def __init__(self) -> None:
        self.polls: list[list[Record]] = []
        self.committed: dict[int, int] = {}
        self.hints: dict[int, int] = {}  # as KafkaSource puts them in the commit's metadata
        self.assigned = [0, 1]
        self.lag_error: KafkaUnavailable | None = None
        self.on_revoked = self.on_assigned = None

    def poll(self) -> list[Record]:
        return self.polls.pop(0) if self.polls else []

    def commit(self, next_offsets: dict[int, int], hints: dict[int, int] | None = None) -> None:
        self.committed.update(next_offsets)
        if hints is not None:
            self.hints = dict(hints)

    def assignment(self) -> list[int]:
        return self.assigned

    def lag(self) -> dict[int, int]:
        if self.lag_error:
            raise self.lag_error
        return dict.fromkeys(self.assigned, 0)

    def close(self) -> None:
        pass


class FakeNotifier:
    def __init__(self, error: Exception | None = None) -> None:
        self.submitted: list = []
        self.adopted: list = []
        self.forgotten: list[str] = []
        self.error = error
        self.problem: str | None = None  # what a real one says when its disk refuses
        self.in_memory = 0  # deliveries the disk refused, not delivered yet

    def unsaved(self) -> int:
        return self.in_memory

    def submit(self, transition) -> None:
        if self.error:
            raise self.error
        self.submitted.append(transition)

    def adopt(self, transition) -> None:
        self.adopted.append(transition)

    def forget(self, services: list[str]) -> None:
        self.forgotten += services


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.acknowledged = True

    def send(self, record: Record, reason: str, detail: str) -> None:
        self.sent.append((record.offset, reason))

    def flush(self) -> bool:
        return self.acknowledged


@dataclass
class Loop:
    daemon: Daemon
    source: FakeSource
    notifier: FakeNotifier
    dead_letters: FakeDeadLetters
    registry: CollectorRegistry
    clock: FakeClock
    model: FixedRisk

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def feed(self, *records: Record) -> None:
        self.source.polls.append(list(records))
        self.daemon.run_once()


def make_loop(notifier: FakeNotifier | None = None, risk: float = 0.1, **stream) -> Loop:
    raw = {**UNIT_CONFIG, "stream": {**UNIT_CONFIG["stream"], **stream}}
    config = parse_config(raw)
    registry, clock, source = CollectorRegistry(), FakeClock(), FakeSource()
    notifier = notifier or FakeNotifier()
    model, dead_letters = FixedRisk(risk), FakeDeadLetters()

    def connect(on_revoked, on_assigned):
        source.on_revoked, source.on_assigned = on_revoked, on_assigned
        return source

    health = HealthState(30.0, clock)
    health.set_check("model", True, "a fixed risk")
    daemon = Daemon(config, Pipeline(config, model), connect, notifier, Telemetry(registry),
                    health, dead_letters, clock=clock, wall_clock=lambda: T0 + 3600.0)
    return Loop(daemon, source, notifier, dead_letters, registry, clock, model)


SAMPLE = object()


def rec(offset: int, service: str = "cart", step: int | None = None, partition: int = 0,
        warmup: bool = False, value: bytes | object | None = SAMPLE) -> Record:
    """A record holding one sample of `service` at step `step` (default: the offset), or
    `value` as it is (None: a tombstone)."""
    ts = T0 + 10 * (offset if step is None else step)
    if value is SAMPLE:
        value = json.dumps({"service": service, "ts": ts, "metrics": {"qps": 100.0}}).encode()
    return Record(partition, offset, service.encode(), value, warmup)  # type: ignore[arg-type]
