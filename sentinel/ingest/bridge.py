"""`sentinel ingest`: a foreign metrics topic in, Sentinel samples keyed by service out.

    >>> bridge = Bridge.create(load_config("ingest.yaml"))
    >>> bridge.run()        # until stop(): 0, or 1 after an unexpected error

The repartition step of Kafka Streams, on Kafka itself: prometheus-kafka-adapter writes
without a key, so one service's points land on every partition; the bridge reads
`input.topic` in its own group `input.group_id`, decodes `input.format`, assembles samples per
(service, step) (sentinel.ingest.assemble) and produces them to `kafka.topic` keyed by
service, where the daemon's replicas split services by partition.

At-least-once: a round polls, decodes and assembles, produces the samples of the steps that
closed and waits for the broker's acks (acks=all), flushes dead letters, and only then
commits, per partition, up to the oldest record whose points still sit in an open step. A
produce that fails raises KafkaUnavailable: the bridge exits 1 without committing and is
restarted by its supervisor, re-reading from the last commit (duplicates, never loss; the
daemon's buckets merge a duplicate sample into the same step). A step still open when the
input goes quiet (an empty poll) is flushed then.

Several replicas may run side by side in one group. Counters stay exact (a rate is measured
between whatever two points of a series a replica saw); an aggregation across series
(`sum`, `mean`) is exact only where one replica sees all of a service's series in a step:
with several replicas on an unkeyed topic, prefer one series per feature (a recording
rule), or key the foreign topic by service.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge

from sentinel.config.schema import Config
from sentinel.core.samples import encode
from sentinel.daemon.health import HealthServer, HealthState
from sentinel.daemon.kafka_client import kafka_errors, make_producer
from sentinel.daemon.kafka_io import DeadLetters, KafkaSource, Record, client_security
from sentinel.errors import ConfigError, KafkaUnavailable
from sentinel.ingest.assemble import Assembler, mappings
from sentinel.ingest.formats import Decoder, decoder_for
from sentinel.ingest.points import INGEST_REASONS, Rejection

log = logging.getLogger(__name__)
ACK_TIMEOUT_SECONDS = 30.0
POINT_OUTCOMES = ("accepted", "late", "unmapped", "no_service")


class IngestTelemetry:
    """The bridge's metrics (`sentinel_ingest_*`), on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.messages = Counter("sentinel_ingest_messages_total",
                                "Foreign messages read, by outcome (decoded or rejected)",
                                ["outcome"], registry=r)
        self.rejected = Counter("sentinel_ingest_rejected_total",
                                "Foreign messages rejected, by reason", ["reason"], registry=r)
        self.points = Counter("sentinel_ingest_points_total",
                              "Decoded points by fate: accepted, late (its step was emitted), "
                              "unmapped (no feature reads it), no_service (no service label)",
                              ["outcome"], registry=r)
        self.samples = Counter("sentinel_ingest_samples_total",
                               "Sentinel samples produced to kafka.topic (acknowledged)", registry=r)
        self.dead_letters = Counter("sentinel_ingest_dead_letters_total",
                                    "Rejected messages written to kafka.dead_letter_topic", registry=r)
        self.open_steps = Gauge("sentinel_ingest_open_steps",
                                "(service, step) pairs assembling, not produced yet", registry=r)
        for reason in INGEST_REASONS:
            self.rejected.labels(reason)
        for outcome in POINT_OUTCOMES:
            self.points.labels(outcome)
        for outcome in ("decoded", "rejected"):
            self.messages.labels(outcome)


def check_ingest_config(config: Config) -> None:
    """ConfigError unless the config names a foreign format and the topic to read it from."""
    if config.input.format == "sentinel":
        raise ConfigError("input.format", "sentinel", "a foreign format for `sentinel ingest`: "
                          "prometheus-kafka-adapter, telegraf-json, otlp-json or otlp-proto")
    if config.input.topic is None:
        raise ConfigError("input.topic", None, "the foreign topic `sentinel ingest` reads")
    if config.input.topic == config.kafka.topic:
        raise ConfigError("input.topic", config.input.topic,
                          "a topic other than kafka.topic (where the samples go)")


class Bridge:
    """One consumer-group member: `run_once()` is a poll -> produce -> commit round."""

    def __init__(self, config: Config, connect: Callable[[Callable[[list[int]], None]], KafkaSource],
                 producer: Any,
                 telemetry: IngestTelemetry, dead_letters: DeadLetters | None = None,
                 health: HealthState | None = None, server: HealthServer | None = None) -> None:
        check_ingest_config(config)
        self.config = config
        self.telemetry = telemetry
        self._connect = connect
        self._producer = producer
        self._dead_letters = dead_letters
        self._health = health
        self._server = server
        self._decode: Decoder = decoder_for(config.input)
        self._assembler = self._new_assembler()
        self._source: KafkaSource | None = None
        self._consumed: dict[int, int] = {}  # partition -> offset after the last record read
        self._committed: dict[int, int] = {}
        self._stop = threading.Event()

    @classmethod
    def create(cls, config: Config, registry: CollectorRegistry | None = None) -> Bridge:
        """Producer, dead letters and metrics server from `config` (the consumer in `run`)."""
        check_ingest_config(config)
        registry = registry or CollectorRegistry()
        security = client_security(config.kafka)
        source_config = replace(config.kafka, topic=str(config.input.topic),
                                group_id=config.input.group_id, rebuild_messages=0)
        producer = make_producer(config.kafka.bootstrap_servers, security, acks="all")
        dead_letters = None
        if config.kafka.dead_letter_topic:
            dead_letters = DeadLetters(config.kafka.bootstrap_servers, config.kafka.dead_letter_topic,
                                       str(config.input.topic), security)
        health = server = None
        if config.input.metrics_listen is not None:
            health = HealthState(3 * max(config.kafka.poll_timeout_seconds, 10.0))
            health.set_check("model", True, "sentinel ingest scores nothing")
            server = HealthServer.from_config(replace(config.metrics, listen=config.input.metrics_listen),
                                              registry, health)

        def connect(on_revoked: Callable[[list[int]], None]) -> KafkaSource:
            return KafkaSource(source_config, on_revoked, lambda partitions: None, security=security)

        return cls(config, connect, producer, IngestTelemetry(registry), dead_letters, health, server)

    def _new_assembler(self) -> Assembler:
        return Assembler(mappings(self.config), self.config.input.service_label,
                         self.config.step_seconds, self.config.input.allowed_lateness_seconds)

    def run(self) -> int:
        """Rounds until `stop()`; 0 then, 1 after an unexpected error (nothing more committed)."""
        if self._server is not None:
            self._server.start()
        log.info("ingest: %s from %s (group %s) -> samples to %s", self.config.input.format,
                 self.config.input.topic, self.config.input.group_id, self.config.kafka.topic)
        try:
            while not self._stop.is_set():
                self.run_once()
        except Exception:
            log.exception("sentinel ingest stopped by an unexpected error; exiting 1 so the "
                          "supervisor restarts it (uncommitted records are read again)")
            return 1
        finally:
            self.close()
        return 0

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> int:
        """One round; the number of samples produced."""
        if self._source is None:
            self._source = self._connect(self._revoked)
            if self._health is not None:
                self._health.set_check("broker", True, "connected")
        records = self._source.poll()
        for record in records:
            self._take(record)
            self._consumed[record.partition] = record.offset + 1
        samples = self._assembler.close_ready() if records else self._assembler.flush()
        if samples:
            self._produce(samples)
        if self._dead_letters is None or self._dead_letters.flush():  # letters safe first
            pending = self._assembler.pending_offsets()
            commit = {p: min(o, pending.get(p, o)) for p, o in list(self._consumed.items())}
            commit = {p: o for p, o in commit.items() if self._committed.get(p) != o}
            if commit:
                self._source.commit(commit)
                self._committed.update(commit)
        self.telemetry.open_steps.set(self._assembler.open_steps)
        if self._health is not None:
            self._health.set_check("partitions", bool(self._source.assignment()),
                                   f"assigned {self._source.assignment()}")
            self._health.progressed()
        return len(samples)

    def _revoked(self, partitions: list[int]) -> None:
        """On kafka-python's IO thread: the next owner reads on from the group's commit."""
        for partition in partitions:
            self._consumed.pop(partition, None)
            self._committed.pop(partition, None)

    def _take(self, record: Record) -> None:
        decoded = self._decode(record.value or b"")
        if isinstance(decoded, list) and not decoded:
            decoded = Rejection("no_points", "the message holds no numeric point")
        if isinstance(decoded, Rejection):
            self.telemetry.messages.labels("rejected").inc()
            self.telemetry.rejected.labels(decoded.reason).inc()
            if self._dead_letters is not None:
                self._dead_letters.send(record, decoded.reason, decoded.detail)
                self.telemetry.dead_letters.inc()
            return
        self.telemetry.messages.labels("decoded").inc()
        counts = self._assembler.add(decoded, origin=(record.partition, record.offset))
        for outcome in POINT_OUTCOMES:
            if n := getattr(counts, outcome):
                self.telemetry.points.labels(outcome).inc(n)

    def _produce(self, samples: list) -> None:
        """Send and wait for every ack; KafkaUnavailable if any is missing."""
        topic = self.config.kafka.topic
        with kafka_errors(f"producing samples to {topic}"):
            futures = [self._producer.send(topic, key=s.service.encode(), value=encode(s).encode())
                       for s in samples]
            self._producer.flush(timeout=ACK_TIMEOUT_SECONDS)
        failed = [f for f in futures if not f.is_done or f.failed()]
        if failed:
            cause = failed[0].exception if failed[0].is_done else "no ack in time"
            raise KafkaUnavailable(f"{len(failed)} of {len(samples)} samples to {topic} not "
                                   f"acknowledged: {cause}")
        self.telemetry.samples.inc(len(samples))

    def close(self) -> None:
        """Leave the group (nothing uncommitted is lost: it is read again), close producers."""
        if self._source is not None:
            self._source.close()
            self._source = None
        for closeable in (self._dead_letters, self._producer):
            if closeable is None:
                continue
            try:
                closeable.close()
            except KafkaError as exc:
                log.warning("closing a producer failed: %s", exc)
        self._dead_letters = self._producer = None
        if self._server is not None:
            self._server.stop()
            self._server = None
