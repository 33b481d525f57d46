"""The Kafka edge: a consumer-group member with manual commits, and the dead-letter producer.

    >>> source = KafkaSource(config.kafka, on_revoked=drop_services, on_assigned=log_it)
    >>> records = source.poll()                 # rebalance callbacks run inside poll()
    >>> source.commit({0: records[-1].offset + 1})

kafka-python objects stay inside this module; the daemon sees `Record`s, partition numbers
and plain offsets, and every kafka-python error becomes `KafkaUnavailable`.

Rebuilding state after an assignment: for each newly assigned partition with a committed
offset c, the consumer seeks back to max(beginning, c - rebuild_messages) and marks the
records below c as *warm-up*: the daemon feeds them through the pipeline to refill windows
and alert state, but their alert transitions were delivered before c was committed, so they
are not sent again.

Episodes older than that range: the daemon passes `commit` the offset at which each
partition's oldest firing episode began, and it travels with the committed offset as its
metadata (``{"rebuild_from": N}``), where any replica that is assigned the partition next
finds it, not only this one (its own copy is sentinel.daemon.rebuild_hints, in `state.dir`). A
broker that drops commit metadata (tansu 0.6 does) leaves the local copy only.

Why the rebalance work is split in two: kafka-python 3 runs rebalance listeners on its IO
thread, where any blocking consumer call (``committed``, ``beginning_offsets``, ``commit``)
raises "Cannot block on net.run() from the IO thread". So the listener only pauses newly
assigned partitions; the next `poll` looks their committed offsets up on the caller's
thread, seeks back and resumes them before it fetches. A revocation commits what `commit`
could not commit yet by awaiting the asynchronous commit on the IO thread itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from sentinel.config.schema import KafkaConfig
from sentinel.daemon.kafka_client import (
    BOOTSTRAP_TIMEOUT_SECONDS,
    RECONNECT_BACKOFF_MAX_MS,
    REQUEST_TIMEOUT_SECONDS,
    client_security,
    kafka_errors,
    make_producer,
)
from sentinel.errors import KafkaUnavailable

__all__ = ["DeadLetters", "KafkaSource", "KafkaUnavailable", "Record", "client_security"]

log = logging.getLogger(__name__)
MAX_HINT_REBUILDS = 10  # a rebuild hint may extend the re-read to this many rebuild_messages
DETAIL_MAX_CHARS = 500
# A dead letter's value is cut to this many bytes (a header says so): kafka-python refuses
# requests over 1 MiB and brokers default to about that, so a 10 MB record that reached the
# topic through another producer would otherwise never be acknowledged as a letter.
MAX_LETTER_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    warmup: bool  # re-read only to rebuild state after an assignment


def rebuild_start(committed: int, beginning: int, rebuild_messages: int,
                  hints: list[int | None]) -> int:
    """Where a newly assigned partition's rebuild begins: `rebuild_messages` before the
    committed offset or, to know the oldest alert episode still firing, before the earliest
    usable hint (this replica's file, the commit's metadata) — at most MAX_HINT_REBUILDS x
    `rebuild_messages` back; a hint at or past the committed offset is stale.

        >>> rebuild_start(10_000, 0, 2000, [None, 5000])
        3000
    """
    oldest = committed - rebuild_messages * MAX_HINT_REBUILDS
    usable = [h for h in hints if h is not None and oldest <= h < committed]
    rebuild = rebuild_messages + (committed - min(usable) if usable else 0)
    return max(beginning, committed - rebuild)


def hint_metadata(hint: int | None) -> str:
    return "" if hint is None else json.dumps({"rebuild_from": hint})


def metadata_hint(metadata: str | None) -> int | None:
    """The hint in a committed offset's metadata; None for none, or another writer's text."""
    try:
        value = json.loads(metadata or "{}").get("rebuild_from")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class KafkaSource:
    """Consumes `config.topic` in group `config.group_id`; commits only what it is told to.

    `on_revoked(partitions)` is called before partitions go away, on kafka-python's IO
    thread while the caller is inside `poll()` or `close()`; it must not block (the daemon
    drops the partitions' services there). `on_assigned(partitions)` is called from `poll()`
    on the caller's thread, once the new partitions are positioned for their warm-up.
    The constructor raises KafkaUnavailable when no broker answers within
    BOOTSTRAP_TIMEOUT_SECONDS; once connected, an outage does not make `poll()` fail:
    kafka-python reconnects in the background and `poll()` returns nothing meanwhile.
    """

    def __init__(self, config: KafkaConfig, on_revoked: Callable[[list[int]], None],
                 on_assigned: Callable[[list[int]], None], auto_offset_reset: str = "earliest",
                 security: Mapping[str, Any] | None = None,
                 rebuild_hint: Callable[[int], int | None] = lambda partition: None) -> None:
        """`security`: `client_security(config)` (computed here when None)."""
        self.config = config
        self._rebuild_hint = rebuild_hint  # sentinel.daemon.rebuild_hints: firing episodes' start
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self._warmup_until: dict[int, int] = {}
        self._to_position: set[int] = set()  # assigned and paused, warm-up not set up yet
        self._uncommitted: dict[int, int] = {}  # handed to commit() and not confirmed yet
        self._hints: dict[int, int] = {}  # the last hints handed to commit()
        session_ms = int(config.session_timeout_seconds * 1000)
        servers = ",".join(config.bootstrap_servers)
        with kafka_errors(f"cannot set up a Kafka consumer for {servers}"):
            self._consumer = KafkaConsumer(
                bootstrap_servers=list(config.bootstrap_servers), group_id=config.group_id,
                enable_auto_commit=False, auto_offset_reset=auto_offset_reset,
                max_poll_records=config.max_poll_records, session_timeout_ms=session_ms,
                # kafka-python refuses a heartbeat interval >= the session timeout; a third of
                # it is what Kafka recommends
                heartbeat_interval_ms=max(100, session_ms // 3),
                max_poll_interval_ms=int(config.max_poll_interval_seconds * 1000),
                client_id=f"sentinel-{config.group_id}",
                reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
                bootstrap_timeout_ms=int(BOOTSTRAP_TIMEOUT_SECONDS * 1000),
                **(client_security(config) if security is None else security))
            self._consumer.subscribe(topics=[config.topic], listener=_Listener(self))

    def poll(self) -> list[Record]:
        """Records of one poll, partition by partition in offset order; may be empty."""
        with kafka_errors("poll failed"):
            # Partitions assigned during the previous poll are positioned first: a failure
            # here costs no record, whereas one after fetching would drop the fetched ones.
            self._position_assigned()
            batches = self._consumer.poll(timeout_ms=int(self.config.poll_timeout_seconds * 1000),
                                          max_records=self.config.max_poll_records)
        records = []
        for tp, items in sorted(batches.items(), key=lambda kv: kv[0].partition):
            until = self._warmup_until.get(tp.partition, -1)
            records += [Record(tp.partition, r.offset, r.key, r.value, r.offset < until)
                        for r in items]
        return records

    def commit(self, next_offsets: dict[int, int], hints: Mapping[int, int] | None = None
               ) -> None:
        """Commit, per partition, the offset of the next record to read (blocks).

        `hints`: partition -> offset where its oldest firing episode began (the committed
        offset's metadata, for whichever replica rebuilds the partition next); None keeps
        the last ones. Offsets that fail to commit are kept and tried again with the next
        call, and before their partition is revoked.
        """
        if hints is not None:
            self._hints = dict(hints)
        self._uncommitted.update(next_offsets)
        if not self._uncommitted:
            return
        offsets = dict(self._uncommitted)
        with kafka_errors("commit failed"):
            self._consumer.commit(self._kafka_offsets(offsets),
                                  timeout_ms=int(REQUEST_TIMEOUT_SECONDS * 1000))
        for partition, offset in offsets.items():
            if self._uncommitted.get(partition) == offset:
                del self._uncommitted[partition]

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._consumer.assignment())

    def lag(self) -> dict[int, int]:
        """Records behind the end of each assigned partition (blocks; asks the broker).

        The end is the larger of the broker's end offset and the high watermark of the last
        fetch: the latter may be stale, and some Kafka-protocol brokers (tansu 0.6) answer
        ListOffsets(latest) with the start of the last record batch instead of its end.
        """
        assigned = [tp for tp in self._consumer.assignment()
                    if tp.partition not in self._to_position]  # not positioned yet
        if not assigned:
            return {}
        with kafka_errors("end offsets lookup failed"):
            ends = self._consumer.end_offsets(assigned,
                                              timeout_ms=int(REQUEST_TIMEOUT_SECONDS * 1000))
            out = {}
            for tp in assigned:
                end = max(ends.get(tp) or 0, self._consumer.highwater(tp) or 0)
                position = self._consumer.position(tp, timeout_ms=int(REQUEST_TIMEOUT_SECONDS * 1000))
                if position is not None:
                    out[tp.partition] = max(0, end - position)
        return out

    def close(self) -> None:
        """Leave the group (the revocation callback runs: uncommitted offsets are committed)."""
        try:
            self._consumer.close(autocommit=False, timeout_ms=int(REQUEST_TIMEOUT_SECONDS * 1000))
        except KafkaError as exc:
            log.warning("closing the Kafka consumer failed: %s", exc)

    def _kafka_offsets(self, offsets: dict[int, int]) -> dict[TopicPartition, OffsetAndMetadata]:
        return {TopicPartition(self.config.topic, p):
                OffsetAndMetadata(o, hint_metadata(self._hints.get(p)), -1)
                for p, o in offsets.items()}

    def _position_assigned(self) -> None:
        """Seek newly assigned partitions back for their warm-up, then let them be fetched."""
        if not self._to_position:
            return
        assigned = []
        for partition in sorted(self._to_position):
            tp = TopicPartition(self.config.topic, partition)
            if tp not in self._consumer.assignment():  # revoked again meanwhile
                self._to_position.discard(partition)
                continue
            found = self._consumer.committed(tp, metadata=True,
                                             timeout_ms=int(REQUEST_TIMEOUT_SECONDS * 1000))
            if found is None or self.config.rebuild_messages == 0:
                self._warmup_until.pop(partition, None)
            else:
                committed = found.offset
                beginning = self._consumer.beginning_offsets(
                    [tp], timeout_ms=int(REQUEST_TIMEOUT_SECONDS * 1000)).get(tp, 0) or 0
                start = rebuild_start(committed, beginning, self.config.rebuild_messages,
                                      [self._rebuild_hint(partition),
                                       metadata_hint(found.metadata)])
                self._warmup_until[partition] = committed
                self._consumer.seek(tp, start)
                log.info("partition %d assigned: rebuilding from offset %d, live from %d",
                         partition, start, committed)
            self._consumer.resume(tp)
            self._to_position.discard(partition)
            assigned.append(partition)
        if assigned:
            self._on_assigned(assigned)

    # --- called by _Listener on kafka-python's IO thread: no blocking consumer calls ---

    def _assigned_io(self, partitions: list[TopicPartition]) -> None:
        self._consumer.pause(*partitions)  # nothing is fetched before the seek back
        self._to_position.update(tp.partition for tp in partitions)

    async def _revoked_io(self, partitions: list[TopicPartition], lost: bool) -> None:
        numbers = sorted(tp.partition for tp in partitions)
        pending = {p: o for p, o in self._uncommitted.items() if p in numbers}
        if pending and not lost:
            try:
                await self._consumer.commit_async(self._kafka_offsets(pending))
                for partition in pending:
                    self._uncommitted.pop(partition, None)
            except Exception as exc:  # the new owner re-reads them: duplicates, not loss
                log.warning("commit on revocation of partitions %s failed: %s", numbers, exc)
        for partition in numbers:
            self._warmup_until.pop(partition, None)
            self._to_position.discard(partition)
            self._uncommitted.pop(partition, None)
        self._on_revoked(numbers)


class _Listener(AsyncConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.source._revoked_io(list(revoked), lost=False)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        # evicted from the group: the partitions may have a new owner, committing is too late
        await self.source._revoked_io(list(lost), lost=True)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.source._assigned_io(list(assigned))


class DeadLetters:
    """Rejected messages, as they came, with the reason and their origin in headers.

    >>> letters = DeadLetters(("127.0.0.1:9092",), "sentinel.dlq", "sentinel.metrics")
    >>> letters.send(record, "malformed_json", "Expecting value: line 1 column 1")
    >>> letters.flush()        # True once the broker acknowledged all of them

    Headers: ``sentinel-reason`` (one of samples.REASONS), ``sentinel-detail``,
    ``sentinel-origin-topic``, ``sentinel-origin-partition``, ``sentinel-origin-offset``
    (decimal strings) and ``sentinel-origin`` (the three as one JSON object). A value over
    `max_letter_bytes` is cut to that size and gets ``sentinel-truncated`` (``"true"``) and
    ``sentinel-original-bytes``. A letter the broker did not acknowledge is sent again by
    the next `flush`, so the daemon commits the offsets of rejected messages only after
    their letters are safe; a letter the broker or the client *refuses* (not retriable:
    too large, topic invalid, not authorised) is dropped, reported to `on_undeliverable`
    (reason, error) and logged, so that one record never stops the group's progress.
    """

    def __init__(self, bootstrap_servers: tuple[str, ...], topic: str, source_topic: str,
                 security: Mapping[str, Any] | None = None,
                 on_undeliverable: Callable[[str, str], None] = lambda reason, error: None,
                 max_letter_bytes: int = MAX_LETTER_BYTES) -> None:
        """`security`: kafka-python's TLS/SASL arguments, `client_security(config)`."""
        self.bootstrap_servers, self.topic, self.source_topic = bootstrap_servers, topic, source_topic
        self._security = dict(security or {})
        self._pending: list[_Letter] = []
        self._producer: KafkaProducer | None = None  # made on first use: the broker may be down
        self._on_undeliverable = on_undeliverable
        self.max_letter_bytes = max_letter_bytes
        self.problem: str | None = None  # why the last flush left letters unacknowledged

    def send(self, record: Record, reason: str, detail: str) -> None:
        """Queue a letter; never raises (a letter that cannot be sent now waits for `flush`)."""
        origin = {"topic": self.source_topic, "partition": record.partition,
                  "offset": record.offset}
        headers = [("sentinel-reason", reason.encode()),
                   ("sentinel-detail", detail[:DETAIL_MAX_CHARS].encode(errors="replace")),
                   ("sentinel-origin-topic", self.source_topic.encode()),
                   ("sentinel-origin-partition", str(record.partition).encode()),
                   ("sentinel-origin-offset", str(record.offset).encode()),
                   ("sentinel-origin", json.dumps(origin).encode())]
        value = record.value or b""
        if len(value) > self.max_letter_bytes:
            headers += [("sentinel-truncated", b"true"),
                        ("sentinel-original-bytes", str(len(value)).encode())]
            value = value[: self.max_letter_bytes]
        self._pending.append(self._send((record.key, value, headers, None)))

    def flush(self, timeout_seconds: float = REQUEST_TIMEOUT_SECONDS) -> bool:
        """Block until every letter is acknowledged; False (and kept for the next call) if not."""
        if not self._pending:
            return True
        if self._producer is None:
            try:
                self._producer = make_producer(
                    self.bootstrap_servers, self._security, acks="all",
                    reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
                    bootstrap_timeout_ms=int(BOOTSTRAP_TIMEOUT_SECONDS * 1000),
                    max_block_ms=int(BOOTSTRAP_TIMEOUT_SECONDS * 1000))  # bounds send() too
            except KafkaUnavailable as exc:
                log.warning("dead-letter producer for %s: %s", self.topic, exc.__cause__ or exc)
                return False
        self._pending = [self._send(letter) if letter[3] is None else letter
                         for letter in self._pending]
        try:
            self._producer.flush(timeout=timeout_seconds)
        except KafkaError as exc:
            log.warning("dead-letter flush to %s failed: %s", self.topic, exc)
            self.problem = str(exc)
        # flush() returns once every send is done, failed ones included: look at each
        kept: list[_Letter] = []
        for key, value, headers, future in self._pending:
            error = future if isinstance(future, Exception) else (
                future.exception if future is not None and future.is_done and future.failed()
                else None)
            if error is not None and not getattr(error, "retriable", False):
                self._undeliverable(headers, error)
            elif future is None or error is not None or not future.is_done:
                if error is not None:
                    self.problem = f"{type(error).__name__}: {error}"
                kept.append((key, value, headers, None))  # sent again by the next flush
        self._pending = kept
        if not kept:
            self.problem = None
        return not kept

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        if self._producer is None:
            return
        try:
            self._producer.close(timeout=5)
        except KafkaError as exc:
            log.warning("closing the dead-letter producer failed: %s", exc)

    def _send(self, letter: _Letter) -> _Letter:
        key, value, headers, _ = letter
        if self._producer is None:  # flush() makes it
            return letter
        try:
            future = self._producer.send(self.topic, key=key, value=value, headers=headers)
        except KafkaError as exc:  # metadata unavailable within max_block_ms, buffer full, too large
            log.debug("dead letter to %s not sent yet: %s", self.topic, exc)
            self.problem = f"{type(exc).__name__}: {exc}"
            future = None if getattr(exc, "retriable", False) else exc  # refused: see flush
        return key, value, headers, future

    def _undeliverable(self, headers: list[tuple[str, bytes]], error: Exception) -> None:
        reason = dict(headers).get("sentinel-reason", b"?").decode(errors="replace")
        origin = dict(headers).get("sentinel-origin", b"{}").decode(errors="replace")
        log.error("dead letter (%s) for %s refused by %s, dropped so that offsets move on: %s: %s",
                  reason, origin, self.topic, type(error).__name__, error)
        self._on_undeliverable(reason, f"{type(error).__name__}: {error}")


# key, value, headers, the send's future (None: not sent, or to be sent again; an exception:
# the client refused it)
_Letter = tuple[bytes | None, bytes, list[tuple[str, bytes]], Any]
