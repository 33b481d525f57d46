"""The Kafka edge: a consumer-group member with manual commits, and the dead-letter producer.

kafka-python objects stay inside this module; the daemon sees `Record`s, partition numbers
and plain offsets. Rebalance callbacks run *inside* `poll()`, on the caller's thread.

Rebuilding state after an assignment: for each newly assigned partition with a committed
offset c, the consumer seeks back to max(beginning, c - rebuild_messages) and marks the
records below c as *warm-up*: the daemon feeds them through the pipeline to refill windows
and alert state, but their alert transitions were delivered before c was committed, so they
are not sent again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from sentinel.config import KafkaConfig
from sentinel.errors import SentinelError

log = logging.getLogger(__name__)


class KafkaUnavailable(SentinelError):
    """The broker cannot be reached or refused a request; the daemon retries."""


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    warmup: bool  # re-read only to rebuild state after an assignment


class KafkaSource:
    """Consumes `config.topic` in group `config.group_id`; commits only what it is told to.

    `on_revoked(partitions)` is called before partitions go away (the daemon commits and
    drops their services there); `on_assigned(partitions)` after new ones arrive.
    """

    def __init__(self, config: KafkaConfig, on_revoked: Callable[[list[int]], None],
                 on_assigned: Callable[[list[int]], None], auto_offset_reset: str = "earliest"
                 ) -> None:
        self.config = config
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self._warmup_until: dict[int, int] = {}
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=list(config.bootstrap_servers), group_id=config.group_id,
                enable_auto_commit=False, auto_offset_reset=auto_offset_reset,
                max_poll_records=config.max_poll_records,
                session_timeout_ms=int(config.session_timeout_seconds * 1000),
                max_poll_interval_ms=int(config.max_poll_interval_seconds * 1000),
                client_id=f"sentinel-{config.group_id}")
        except KafkaError as exc:
            raise KafkaUnavailable(f"cannot reach Kafka at {config.bootstrap_servers}: {exc}") from exc
        self._consumer.subscribe(topics=[config.topic], listener=_Listener(self))

    def poll(self) -> list[Record]:
        try:
            batches = self._consumer.poll(timeout_ms=int(self.config.poll_timeout_seconds * 1000),
                                          max_records=self.config.max_poll_records)
        except KafkaError as exc:
            raise KafkaUnavailable(f"poll failed: {exc}") from exc
        records = []
        for tp, items in sorted(batches.items(), key=lambda kv: kv[0].partition):
            until = self._warmup_until.get(tp.partition, -1)
            records += [Record(tp.partition, r.offset, r.key, r.value, r.offset < until) for r in items]
        return records

    def commit(self, next_offsets: dict[int, int]) -> None:
        """Commit, per partition, the offset of the next record to read."""
        if not next_offsets:
            return
        offsets = {TopicPartition(self.config.topic, p): OffsetAndMetadata(o, "", -1)
                   for p, o in next_offsets.items()}
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            raise KafkaUnavailable(f"commit failed: {exc}") from exc

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._consumer.assignment())

    def lag(self) -> dict[int, int]:
        """Records behind the end of each assigned partition (from the consumer's metadata)."""
        out = {}
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                out[tp.partition] = max(0, highwater - self._consumer.position(tp))
        return out

    def connected(self) -> bool:
        try:
            return bool(self._consumer.bootstrap_connected())
        except Exception:  # a closed or broken client is simply not connected
            return False

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            committed = self._consumer.committed(tp)
            if committed is None or self.config.rebuild_messages == 0:
                self._warmup_until.pop(tp.partition, None)
                continue
            beginning = self._consumer.beginning_offsets([tp]).get(tp, 0) or 0
            start = max(beginning, committed - self.config.rebuild_messages)
            self._warmup_until[tp.partition] = committed
            self._consumer.seek(tp, start)
            log.info("partition %d assigned: rebuilding from offset %d, live from %d",
                     tp.partition, start, committed)
        self._on_assigned(sorted(tp.partition for tp in partitions))

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._on_revoked(sorted(tp.partition for tp in partitions))
        for tp in partitions:
            self._warmup_until.pop(tp.partition, None)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.source._revoked(list(revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.source._assigned(list(assigned))


class DeadLetters:
    """Rejected messages, as they came, with the reason and their origin in headers."""

    def __init__(self, bootstrap_servers: tuple[str, ...], topic: str, source_topic: str) -> None:
        self.topic, self.source_topic = topic, source_topic
        self._producer = KafkaProducer(bootstrap_servers=list(bootstrap_servers), acks="all",
                                       linger_ms=20)

    def send(self, record: Record, reason: str, detail: str) -> None:
        headers = [("sentinel-reason", reason.encode()), ("sentinel-detail", detail.encode()),
                   ("sentinel-origin", json.dumps({"topic": self.source_topic,
                                                   "partition": record.partition,
                                                   "offset": record.offset}).encode())]
        self._producer.send(self.topic, key=record.key, value=record.value or b"", headers=headers)

    def flush(self, timeout_seconds: float = 10.0) -> None:
        """Block until the dead letters are acknowledged (before offsets are committed)."""
        try:
            self._producer.flush(timeout=timeout_seconds)
        except KafkaError as exc:
            raise KafkaUnavailable(f"dead-letter flush failed: {exc}") from exc

    def close(self) -> None:
        self._producer.close(timeout=5)
