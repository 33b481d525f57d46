"""Dependency steps shared between replicas: `kafka.steps_topic` (docs/topology.md).

    >>> steps = StepsTopic.from_config(config.kafka, security, lookback_seconds=600)
    >>> steps.publish(pipeline.gate.take_outgoing())   # this replica's closed dependency steps
    >>> result = pipeline.receive(steps.poll())         # the other replicas' ones

Each replica publishes, keyed by service, every step it closed of a service that some caller
depends on (with that window's prepared inputs, failing and pressure rows when it made a
scorable window) to one compacted topic, and reads every partition of it with its own
consumer (no group, nothing committed), starting `lookback_seconds` of wall time back (the
beginning where the broker cannot look up offsets by time). A record carries the id of the
replica that wrote it, so a replica skips its own. Decoding problems are logged and skipped:
a missing step is neutral after `stream.dependency_wait`, as any late one.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from sentinel.config.schema import KafkaConfig
from sentinel.core.topology import DependencySteps
from sentinel.daemon.kafka_client import (
    BOOTSTRAP_TIMEOUT_SECONDS,
    RECONNECT_BACKOFF_MAX_MS,
    kafka_errors,
    make_producer,
)
from sentinel.errors import KafkaUnavailable

log = logging.getLogger(__name__)

FORMAT = 1
Step = tuple[str, int, DependencySteps | None]


def encode(step: Step, origin: str) -> bytes:
    """One record value: JSON with the arrays as base64 float32 (shape: steps x k)."""
    service, ts, steps = step
    body: dict[str, Any] = {"v": FORMAT, "origin": origin, "service": service, "ts": ts}
    if steps is not None:
        prepared = np.ascontiguousarray(steps.prepared[0], np.float32)
        body["shape"] = list(prepared.shape)
        for name, array in (("prepared", prepared), ("failing", steps.failing[0]),
                            ("pressure", steps.pressure[0])):
            body[name] = base64.b64encode(np.asarray(array, "<f4").tobytes()).decode("ascii")
    return json.dumps(body, separators=(",", ":")).encode()


def decode(value: bytes) -> tuple[str, Step]:
    """(origin, step) from a record value; ValueError when it is not one."""
    try:
        body = json.loads(value)
        if body.get("v") != FORMAT:
            raise ValueError(f"format {body.get('v')!r}, expected {FORMAT}")
        service, ts = str(body["service"]), int(body["ts"])
        steps = None
        if "prepared" in body:
            n, k = (int(x) for x in body["shape"])

            def array(name: str, shape: tuple[int, ...]) -> np.ndarray:
                return np.frombuffer(base64.b64decode(body[name]), "<f4").reshape(shape).astype(
                    np.float32)

            steps = DependencySteps(array("prepared", (1, n, k)), array("failing", (1, n)),
                                    array("pressure", (1, n)))
        return str(body["origin"]), (service, ts, steps)
    except (KeyError, TypeError, json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"not a dependency step record: {exc}") from exc


class StepsTopic:
    def __init__(self, bootstrap: tuple[str, ...], topic: str, lookback_seconds: float,
                 security: Mapping[str, Any] | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.topic = topic
        self.origin = uuid.uuid4().hex  # this process: its own records are skipped
        self.skipped = 0  # records that could not be decoded
        servers = list(bootstrap)
        with kafka_errors(f"cannot read the steps topic {topic}"):
            self._consumer = KafkaConsumer(
                bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
                bootstrap_timeout_ms=int(BOOTSTRAP_TIMEOUT_SECONDS * 1000),
                **dict(security or {}))
        try:
            with kafka_errors(f"cannot read the steps topic {topic}"):
                found = self._consumer.partitions_for_topic(topic)
                if not found:
                    raise KafkaUnavailable(f"the steps topic {topic} does not exist (create it "
                                           "compacted: docs/topology.md)")
                partitions = [TopicPartition(topic, p) for p in sorted(found)]
                self._consumer.assign(partitions)
                self._seek(partitions, wall_clock() - lookback_seconds)
            self._producer = make_producer(servers, security, acks=1)
        except KafkaUnavailable:
            self._consumer.close()
            raise

    @classmethod
    def from_config(cls, config: KafkaConfig, security: Mapping[str, Any] | None,
                    lookback_seconds: float) -> StepsTopic:
        assert config.steps_topic is not None
        return cls(config.bootstrap_servers, config.steps_topic, lookback_seconds, security)

    def _seek(self, partitions: list[TopicPartition], since: float) -> None:
        """Each partition from the first record written at or after `since` (wall time)."""
        try:
            found = self._consumer.offsets_for_times({tp: int(since * 1000) for tp in partitions})
        except KafkaError as exc:  # a broker without time lookups: read it all (compacted)
            log.info("steps topic %s: no offset lookup by time (%s); reading from the beginning",
                     self.topic, exc)
            found = {}
        for tp in partitions:
            at = found.get(tp)
            if at is not None:
                self._consumer.seek(tp, at.offset)
            elif tp in found:  # nothing written since: from the end
                self._consumer.seek_to_end(tp)
            else:
                self._consumer.seek_to_beginning(tp)

    def publish(self, steps: list[Step]) -> None:
        """Send the steps (not waiting for the broker: a lost one is late, never a stall)."""
        with kafka_errors(f"publishing to the steps topic {self.topic}"):
            for step in steps:
                self._producer.send(self.topic, key=step[0].encode(), value=encode(step, self.origin))

    def poll(self) -> list[Step]:
        """The other replicas' steps received since the last call (never blocks)."""
        with kafka_errors(f"reading the steps topic {self.topic}"):
            batches = self._consumer.poll(timeout_ms=0)
        out: list[Step] = []
        for records in batches.values():
            for record in records:
                try:
                    origin, step = decode(record.value or b"")
                except ValueError as exc:
                    self.skipped += 1
                    log.warning("steps topic %s offset %d skipped: %s", self.topic,
                                record.offset, exc)
                    continue
                if origin != self.origin:
                    out.append(step)
        return out

    def close(self) -> None:
        for client in (self._producer, self._consumer):
            try:
                client.close()
            except KafkaError as exc:
                log.debug("closing the steps topic client: %s", exc)
