"""The run loop of `sentinel run`: Kafka records in, risk gauges and alert deliveries out.

    >>> daemon = Daemon(config, pipeline, connect, notifier, telemetry, health)
    >>> daemon.run()        # until stop() (SIGTERM/SIGINT): finishes the batch, commits, closes

One `run_once()` is one poll:

1. poll; decode each live record (rejections: counted by reason, dead-lettered if configured);
2. feed the warm-up samples (re-read after an assignment) to the pipeline; the alert
   transitions they cause were delivered before their offsets were committed, so they are
   only adopted (the Alertmanager sink keeps re-sending a firing one), not sent again;
3. feed the live samples; publish the latest risk per service; submit every transition to
   the notifier (durable on return) and log it;
4. mark silent services, evict beyond `stream.max_services`;
5. flush the dead letters, then commit offset + 1 per partition read.

Before the poll, a newly promoted model that finished loading in the background is swapped
in (sentinel.daemon.hotswap), so no bucket is skipped or scored twice. The buckets closed by live
samples go to the history store (sentinel.daemon.history_store) before the commit; a disk error
there is counted and shown in /readyz as degraded, and scoring goes on.

So an offset is committed only once its sample is in the windows, the alerts it caused are
in the outbox and its dead letter is acknowledged: at-least-once. A crash in between means
the records are read again, and a re-sent alert carries the same Idempotency-Key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from sentinel.config.schema import Config
from sentinel.core.alerts import AlertTransition
from sentinel.core.buckets import Bucket
from sentinel.core.pipeline import Pipeline, StepResult
from sentinel.core.samples import Rejection, Sample, decode
from sentinel.core.services import ServiceTracker
from sentinel.core.topology import DependencySteps, Topology
from sentinel.daemon.health import HealthState
from sentinel.daemon.kafka_io import KafkaUnavailable, Record
from sentinel.daemon.sdnotify import SystemdNotifier
from sentinel.daemon.telemetry import Telemetry, top_edges
from sentinel.logs import LogThrottle
from sentinel.model.artifact import LoadedModel
from sentinel.sinks import OutboxError

log = logging.getLogger(__name__)

LAG_REFRESH_SECONDS = 2.0  # consumer lag is also the broker-reachability probe
BACKOFF_SECONDS = (0.5, 10.0)  # after a failed poll: first wait, doubling up to the second


class Source(Protocol):
    """What the loop needs from Kafka (sentinel.daemon.kafka_io.KafkaSource); all may block."""

    def poll(self) -> list[Record]: ...
    def commit(self, next_offsets: dict[int, int], hints: dict[int, int] | None = None
               ) -> None: ...
    def assignment(self) -> list[int]: ...
    def lag(self) -> dict[int, int]: ...
    def close(self) -> None: ...


class Notifier(Protocol):
    """sentinel.sinks.Notifier: each call writes to local disk. A delivery the disk refused is
    kept in memory (`unsaved()`, `problem`); OutboxError only for anything else."""

    problem: str | None

    def unsaved(self) -> int: ...
    def submit(self, transition: AlertTransition) -> None: ...
    def adopt(self, transition: AlertTransition) -> None: ...
    def refresh(self, transitions: list[AlertTransition]) -> None: ...
    def forget(self, services: list[str]) -> None: ...


class DeadLetterSink(Protocol):
    """sentinel.daemon.kafka_io.DeadLetters; `flush` blocks until acknowledged or timed out."""

    problem: str | None  # why the last flush left letters unacknowledged

    def send(self, record: Record, reason: str, detail: str) -> None: ...
    def flush(self) -> bool: ...


class HistorySink(Protocol):
    """sentinel.daemon.history_store.HistoryStore: `append` writes to local disk and never raises (a
    disk error is counted and kept in `problem` until a write succeeds again)."""

    problem: str | None

    def append(self, buckets: list[Bucket]) -> int: ...


class HintSink(Protocol):
    """sentinel.daemon.rebuild_hints.RebuildHints: where a restart must begin its rebuild."""

    def save(self, hints: dict[int, int]) -> None: ...


class TopologySource(Protocol):
    """sentinel.daemon.topology_watch.TopologyWatcher: a changed topology, or None; never blocks."""

    def poll(self, now: float) -> Topology | None: ...


class StepsSource(Protocol):
    """sentinel.daemon.steps_topic.StepsTopic: dependency steps shared between replicas."""

    def publish(self, steps: list[tuple[str, int, DependencySteps | None]]) -> None: ...
    def poll(self) -> list[tuple[str, int, DependencySteps | None]]: ...
    def close(self) -> None: ...


class ModelSource(Protocol):
    """sentinel.daemon.hotswap.ModelWatcher: a verified model to swap in now, or None; never blocks."""

    def poll(self, now: float) -> LoadedModel | None: ...


# connect(on_revoked, on_assigned) -> Source; raises KafkaUnavailable
Connect = Callable[[Callable[[list[int]], None], Callable[[list[int]], None]], Source]


class Daemon:
    def __init__(self, config: Config, pipeline: Pipeline, connect: Connect, notifier: Notifier,
                 telemetry: Telemetry, health: HealthState,
                 dead_letters: DeadLetterSink | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 systemd: SystemdNotifier | None = None,
                 history: HistorySink | None = None, models: ModelSource | None = None,
                 rebuild_hints: HintSink | None = None,
                 topology: TopologySource | None = None,
                 steps: Callable[[], StepsSource] | None = None) -> None:
        self.config, self.pipeline, self.notifier = config, pipeline, notifier
        # READY / WATCHDOG / STOPPING for a Type=notify unit; a no-op without NOTIFY_SOCKET
        self.systemd = systemd or SystemdNotifier.from_environment()
        self.telemetry, self.health, self.dead_letters = telemetry, health, dead_letters
        self.clock, self.wall_clock = clock, wall_clock
        self.history, self.models, self.rebuild_hints = history, models, rebuild_hints
        self.topology = topology
        self._steps_connect, self._steps = steps, None  # several replicas: the steps topic
        # a service that has filled a window is evicted only after every newcomer
        self.tracker = ServiceTracker(config.stream.silence_seconds, config.stream.max_services,
                                      protect_after_samples=config.window_steps)
        self._connect = connect
        self._source: Source | None = None
        self._stopping = threading.Event()
        self._to_commit: dict[int, int] = {}  # read and processed, not handed to commit yet
        self._lag_due = 0.0
        self._trouble = LogThrottle(log)  # a broker outage: once a minute, not once a poll
        self._hold = LogThrottle(log)
        self._poll_starts: dict[int, int] = {}  # partition -> first offset of this poll
        self._episode_offsets: dict[str, tuple[int, int]] = {}  # firing: (partition, offset)

    def run(self) -> None:
        """Loop until `stop()`; then commit what was processed and close the consumer.

        Broker trouble is retried forever; any other exception propagates (after the
        consumer is closed) for the caller to log and exit non-zero.
        """
        self.telemetry.up.set(1)
        backoff = BACKOFF_SECONDS[0]
        try:
            while not self._stopping.is_set():
                try:
                    self.run_once()
                    backoff = BACKOFF_SECONDS[0]
                except KafkaUnavailable as exc:
                    self._broker_trouble(exc)
                    self.health.progressed()  # the loop turns; readiness tells the outage
                    self.systemd.alive(self.clock())
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_SECONDS[1])
            self.systemd.stopping("committing offsets and leaving the consumer group")
            self._commit()
        finally:
            self.telemetry.up.set(0)
            if self._source is not None:
                self._source.close()  # leaves the group: the partitions move on at once
            if self._steps is not None:
                self._steps.close()

    def stop(self) -> None:
        """Ask the loop to finish its batch and return; safe from a signal handler."""
        self._stopping.set()

    def run_once(self) -> None:
        if self._source is None:
            self._source = self._connect(self._revoked, self._assigned)
        self._swap_model()
        self._swap_topology()
        records = self._source.poll()
        now = self.clock()
        warmup, live = self._decode(records, now)
        self._process(warmup, live=False)
        self._process(live, live=True)
        self._exchange_steps()
        self.health.set_degraded("outbox", self.notifier.problem)  # alerts the disk refused
        self._sweep(now)
        self._commit()
        self._refresh_broker_facts(now)
        self.health.progressed()
        self.telemetry.progress.set(self.wall_clock())
        if not self.systemd.is_ready and self.health.readiness()[0]:
            # the first time /readyz would answer 200: model loaded, partitions assigned
            self.systemd.ready(f"consuming {self.config.kafka.topic} as {self.config.kafka.group_id}")
        self.systemd.alive(self.clock())

    def _decode(self, records: list[Record], now: float) -> tuple[list[Sample], list[Sample]]:
        warmup: list[Sample] = []
        live: list[Sample] = []
        wall_ts = self.wall_clock()
        self._poll_starts = {}
        for record in records:
            if not record.warmup:  # a warm-up record is below the committed offset already
                self._to_commit[record.partition] = record.offset + 1
            self._poll_starts.setdefault(record.partition, record.offset)
            decoded = decode(record.value or b"", wall_ts, self.config.stream.max_future_seconds)
            if record.warmup:
                self.telemetry.warmup.inc()
            if isinstance(decoded, Rejection):
                if not record.warmup:  # a warm-up record was counted when it was live
                    self._reject(record, decoded)
                continue
            if self.tracker.seen(decoded.service, record.partition, now):
                self.telemetry.no_data.labels(decoded.service).set(0)
                log.info("service %s sends samples again", decoded.service)
            (warmup if record.warmup else live).append(decoded)
        return warmup, live

    def _reject(self, record: Record, rejection: Rejection) -> None:
        self.telemetry.rejected.labels(rejection.reason).inc()
        self.telemetry.outcomes.labels("rejected").inc()
        log.debug("rejected partition %d offset %d: %s (%s)", record.partition, record.offset,
                  rejection.reason, rejection.detail)
        if self.dead_letters is not None:
            self.dead_letters.send(record, rejection.reason, rejection.detail)
            self.telemetry.dead_letters.inc()

    def _exchange_steps(self) -> None:
        """Several replicas: publish the dependency steps closed here, score the callers that
        the other replicas' steps complete (their transitions are live ones)."""
        if self._steps_connect is None:
            return
        if self._steps is None:
            self._steps = self._steps_connect()  # KafkaUnavailable: retried by `run`
            self.pipeline.gate.publish = True
        self._steps.publish(self.pipeline.gate.take_outgoing())
        remote = self._steps.poll()
        if remote:
            started = self.clock()
            result = self.pipeline.receive(remote)
            self.telemetry.scoring_latency.observe(self.clock() - started)
            self.telemetry.dependency_late.inc(result.dependency_late)
            self._handle(result, live=True)
        gate = self.pipeline.gate
        if gate.newest_remote > -1 << 62 and gate.newest_local > -1 << 62:
            self.telemetry.steps_behind.set(max(0, gate.newest_local - gate.newest_remote))

    def _process(self, samples: list[Sample], live: bool) -> None:
        if not samples:
            return
        started = self.clock()
        result = self.pipeline.process(samples)
        self.telemetry.scoring_latency.observe(self.clock() - started)
        if live:
            self._record(result.buckets)
            self._count(samples, result)
        self._handle(result, live)

    def _handle(self, result: StepResult, live: bool) -> None:
        """A result's gauges, alert deliveries (live) or adoptions (warm-up) and logs."""
        if result.batch_size:
            self.telemetry.batch_size.observe(result.batch_size)
        latest = {score.service: score for score in result.scores}
        for score in latest.values():
            self.telemetry.set_risk(score.service, score.risk)
        if live and self.pipeline.gate.topology and latest:
            gate = self.pipeline.gate
            self.telemetry.set_edges(top_edges({s: (x.ts, x.risk) for s, x in latest.items()},
                                               gate.topology.dependencies, gate.pressure))
        for score in result.scores if log.isEnabledFor(logging.DEBUG) else ():
            log.debug("scored service=%s ts=%d risk=%.4f", score.service, score.ts, score.risk,
                      extra={"fields": {"event": "score", "service": score.service,
                                        "event_ts": score.ts, "risk": score.risk, "live": live}})
        if live:
            for transition in result.transitions:
                self.notifier.submit(transition)  # OutboxError propagates: nothing is committed
                self.telemetry.alerts.labels(transition.state).inc()
                _log_transition(transition)
        else:
            for transition in result.transitions:  # delivered before: taken over, not resent
                self.notifier.adopt(transition)
        self.notifier.refresh(result.refreshed)  # resolved meanwhile: ignored by the sinks
        for transition in sorted([*result.transitions, *result.refreshed], key=lambda t: t.ts):
            if transition.state == "firing":
                self.telemetry.set_drivers(transition.service, transition.drivers)
            else:
                self.telemetry.clear_drivers(transition.service)
        self._note_episodes(result.transitions)
        self.telemetry.firing.set(self.pipeline.alerts.firing_count())

    def _note_episodes(self, transitions: list[AlertTransition]) -> None:
        """Where each firing episode began (sentinel.daemon.rebuild_hints): the poll's first offset
        on the service's partition, at or before the record that fired it."""
        for t in transitions:
            partition = self.tracker.partition(t.service)
            if t.state == "resolved":
                self._episode_offsets.pop(t.service, None)
            elif partition is not None and partition in self._poll_starts:
                self._episode_offsets[t.service] = (partition, self._poll_starts[partition])

    def _swap_model(self) -> None:
        """Between two polls: take a newly promoted model the watcher loaded meanwhile."""
        model = self.models.poll(self.clock()) if self.models is not None else None
        if model is None:
            return
        alerting = model.alerting(self.config)
        self.pipeline.swap_model(model.scorer, alerting)
        self.telemetry.set_model(model.version, model.written_ts(), self.wall_clock,
                                 alerting.threshold)
        self.health.set_check("model", True, f"version {model.version} from {model.path}")

    def _swap_topology(self) -> None:
        """Between two polls: the topology file changed."""
        topology = self.topology.poll(self.clock()) if self.topology is not None else None
        if topology is not None:
            self.pipeline.set_topology(topology)

    def _record(self, buckets: list[Bucket]) -> None:
        """Closed buckets to the history store; live ones only (warm-up re-reads were recorded)."""
        if self.history is None or not buckets:
            return
        self.history.append(buckets)  # never raises: scoring must not stop for the history
        self.health.set_degraded("history", self.history.problem)

    def _count(self, samples: list[Sample], result: StepResult) -> None:
        late = len(result.late)
        self.telemetry.samples.inc(len(samples))
        self.telemetry.outcomes.labels("accepted").inc(len(samples) - late)
        self.telemetry.outcomes.labels("late").inc(late)
        self.telemetry.late.inc(late)
        self.telemetry.unscorable.inc(result.unscorable)
        self.telemetry.dependency_late.inc(result.dependency_late)
        log.debug("batch: %d samples, %d late, %d windows scored, %d transitions", len(samples),
                  late, result.batch_size, len(result.transitions),
                  extra={"fields": {"event": "batch", "samples": len(samples), "late": late,
                                    "scored": result.batch_size,
                                    "transitions": len(result.transitions)}})

    def _sweep(self, now: float) -> None:
        """No-data marking and the memory cap."""
        for service in self.tracker.went_silent(now):
            # A stale risk reads as "fine": the gauge goes away while the service is silent.
            self.telemetry.forget_services([service])
            self.telemetry.no_data.labels(service).set(1)
            log.warning("service %s sent no sample for %.0fs: no data", service,
                        self.config.stream.silence_seconds,
                        extra={"fields": {"event": "no_data", "service": service}})
        evicted = self.tracker.evict()
        if evicted:
            self._drop(evicted)
            self.telemetry.evicted.inc(len(evicted))
            log.warning("tracking more than %d services: evicted %d idle ones (e.g. %s)",
                        self.config.stream.max_services, len(evicted), evicted[0])
        self.telemetry.tracked.set(len(self.tracker))

    def _commit(self) -> None:
        if not self._to_commit or self._source is None:
            return
        if self.dead_letters is not None and not self.dead_letters.flush():
            self._hold.log(self.clock(), logging.WARNING, "dead letters not acknowledged (%s); "
                           "offsets wait for the next batch",
                           getattr(self.dead_letters, "problem", None) or "no answer yet")
            return
        if self.notifier.unsaved():
            # An alert the disk refused lives only in memory until delivered: committing now
            # would lose it in a crash. Scoring goes on; the commit waits.
            self._hold.log(self.clock(), logging.WARNING, "offsets wait: %d alert deliveries are "
                           "only in memory (the outbox cannot be written) until delivered",
                           self.notifier.unsaved())
            return
        self._hold.reset()
        hints: dict[int, int] = {}  # where each partition's oldest firing episode began
        for partition, offset in self._episode_offsets.values():
            hints[partition] = min(offset, hints.get(partition, offset))
        if self.rebuild_hints is not None:  # before the commit that a restart starts from
            self.rebuild_hints.save(hints)
        offsets, self._to_commit = self._to_commit, {}
        try:
            self._source.commit(offsets, hints)  # kept by the source and retried if this fails
        except KafkaUnavailable as exc:
            self.telemetry.commit_failures.inc()
            self._broker_trouble(exc)

    def _refresh_broker_facts(self, now: float) -> None:
        assert self._source is not None
        assigned = self._source.assignment()
        self.health.set_check("partitions", bool(assigned),
                              f"assigned {assigned}" if assigned else "no partition assigned")
        if now < self._lag_due:
            return
        self._lag_due = now + LAG_REFRESH_SECONDS
        try:
            self.telemetry.set_lag(self._source.lag())
        except KafkaUnavailable as exc:
            self._broker_trouble(exc)
            return
        self.health.set_check("broker", True, "reachable")
        if self._trouble.active:
            log.info("Kafka is reachable again")
            self._trouble.reset()

    def _broker_trouble(self, exc: KafkaUnavailable) -> None:
        self.telemetry.broker_errors.inc()
        self.health.set_check("broker", False, str(exc))
        self._trouble.log(self.clock(), logging.WARNING,
                          "Kafka trouble (retrying; logged once a minute): %s", exc)

    def _drop(self, services: list[str]) -> None:
        for service in services:
            self.pipeline.drop(service)
            self._episode_offsets.pop(service, None)
        self.tracker.forget(services)
        self.telemetry.forget_services(services)
        self.telemetry.firing.set(self.pipeline.alerts.firing_count())
        try:
            self.notifier.forget(services)  # e.g. stop re-sending their alerts to Alertmanager
        except OutboxError as exc:
            log.error("cannot forget the alerts of %d services: %s", len(services), exc)

    # --- rebalance callbacks (sentinel.daemon.kafka_io): must not block ---

    def _revoked(self, partitions: list[int]) -> None:
        if not partitions:  # kafka-python announces the empty set before the first join
            return
        services = self.tracker.on_partitions(partitions)
        self._drop(services)
        for partition in partitions:
            self._to_commit.pop(partition, None)  # the source committed what it could
        log.info("partitions %s revoked: dropped the state of %d services", partitions,
                 len(services))

    def _assigned(self, partitions: list[int]) -> None:
        log.info("partitions %s assigned", partitions)


def _log_transition(t: AlertTransition) -> None:
    log.info("alert %s service=%s risk=%.3f ts=%d episode=%s", t.state, t.service, t.risk, t.ts,
             t.episode_key, extra={"fields": {
                 "event": "alert", "state": t.state, "service": t.service, "risk": t.risk,
                 "event_ts": t.ts, "started_ts": t.started_ts, "episode": t.episode_key}})
