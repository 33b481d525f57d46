"""The Notifier: alert transitions in, deliveries to webhooks and Alertmanager out.

    >>> notifier = Notifier(config.alerting, config.state.dir, registry=registry)
    >>> notifier.start()
    >>> notifier.submit(transition)          # durable on return: now commit the Kafka offsets
    >>> notifier.flush(timeout_seconds=5.0)  # True once nothing is pending
    True
    >>> notifier.stop(timeout_seconds=5.0)
    True

`submit` runs on the consumer's thread and touches only the local disk (the outbox). Each
sink (webhook0, webhook1, ..., alertmanager) has its own worker thread that delivers that
sink's deliveries strictly in order (a firing before its resolve), so a slow or dead sink
delays nobody but itself.

The retry policy is in `sentinel.sinks.retry`.
"""

from __future__ import annotations

import logging
import random as random_module
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from sentinel.config.schema import AlertingConfig
from sentinel.config.secrets import mask_url
from sentinel.core.alerts import AlertTransition
from sentinel.sinks.alertmanager import AlertmanagerSink
from sentinel.sinks.base import Request, Sink
from sentinel.sinks.outbox import Delivery, Outbox, OutboxError
from sentinel.sinks.retry import backoff_seconds, classify, retry_after_seconds
from sentinel.sinks.transport import HttpTransport, Post, TransportError
from sentinel.sinks.webhook import WebhookSink

log = logging.getLogger(__name__)

# wait(event, timeout_seconds): block until `event` is set or the timeout passes (None: no
# timeout). Tests pass one that advances a fake clock instead of sleeping.
Wait = Callable[[threading.Event, float | None], object]
OUTCOMES = ("delivered", "retried", "rejected", "dropped_overflow", "expired")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)


def wait_event(event: threading.Event, timeout_seconds: float | None) -> None:
    event.wait(timeout_seconds)


class Notifier:
    """Durable, retried delivery of alert transitions to every configured sink."""

    def __init__(
        self,
        config: AlertingConfig,
        state_dir: str | Path,
        *,
        registry: CollectorRegistry = REGISTRY,
        post: Post | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        wait: Wait = wait_event,
        random: Callable[[], float] = random_module.random,
    ) -> None:
        """Loads the outbox under `<state_dir>/outbox/` and the webhook secrets.

        Raises ConfigError for a missing secret or CA file and OutboxError for an unusable
        directory. `post` defaults to real HTTP(S) with each sink's TLS context.
        `clock` is monotonic (deadlines, backoff); `wall_clock` is Unix time (ages, endsAt).
        """
        self.config = config
        self.clock, self.wall_clock, self.wait, self.random = clock, wall_clock, wait, random
        self.outbox = Outbox(Path(state_dir) / "outbox", config.delivery.max_pending)
        sinks: list[Sink] = [WebhookSink(i, webhook, config.severity, config.external_url)
                             for i, webhook in enumerate(config.webhooks)]
        if config.alertmanager is not None:
            sinks.append(AlertmanagerSink(config.alertmanager, config.severity, self.outbox,
                                          wall_clock(), config.external_url))
        self.post = post or HttpTransport({sink.url: sink.tls_context for sink in sinks
                                           if sink.tls_context is not None})
        self.metrics = _Metrics(registry, [sink.name for sink in sinks])
        self.metrics.pending.set_function(lambda: len(self.outbox))
        self.metrics.unsaved.set_function(self.outbox.unsaved)
        self.metrics.corrupt.inc(self.outbox.corrupt_total)
        self._workers = [_Worker(sink, self) for sink in sinks]
        self._stopping = threading.Event()
        self._submit_lock = threading.Lock()
        self.sink_problem: str | None = None
        self._started = False
        self._drop_unknown_sinks()

    def start(self) -> None:
        """Start one worker thread per sink; call once."""
        if self._started:
            raise RuntimeError("a Notifier starts once; make a new one on the same state dir")
        self._started = True
        for worker in self._workers:
            worker.thread = threading.Thread(target=worker.run, daemon=True,
                                             name=f"sentinel-notify-{worker.sink.name}")
            worker.thread.start()

    def submit(self, transition: AlertTransition) -> None:
        """Queue `transition` for every sink; durable on return unless the disk refused it.

        Called on the consumer's thread; blocks only for local disk writes, never for the
        network; never raises for a disk error: the delivery is then kept in memory and
        delivered all the same, counted in `sentinel_outbox_write_errors_total` and shown in
        `problem`. Commit no offset while `unsaved()` is not 0: a crash would lose it.
        """
        with self._submit_lock:
            created_ts = self.wall_clock()
            errors = self.outbox.write_errors
            for worker in self._workers:
                try:
                    worker.sink.record(transition)
                except OutboxError as exc:  # the sink keeps its state in memory
                    self.sink_problem = str(exc)
                    self.metrics.write_errors.inc()
                    log.error("%s: %s", worker.sink.name, exc)
                else:
                    self.sink_problem = None
                for dropped in self.outbox.put(Delivery(worker.sink.name, transition, created_ts)):
                    self.metrics.deliveries.labels(dropped.sink, "dropped_overflow").inc()
                worker.wake.set()
            self.metrics.write_errors.inc(self.outbox.write_errors - errors)

    @property
    def problem(self) -> str | None:
        """Why the last alert could not be written to disk; None once a write succeeds."""
        return self.outbox.problem or self.sink_problem

    def unsaved(self) -> int:
        """Pending deliveries kept only in memory (the disk refused them)."""
        return self.outbox.unsaved()

    def adopt(self, transition: AlertTransition) -> None:
        """Let the sinks know of a transition that was delivered before, without delivering it
        again: the daemon replays a newly assigned partition and takes over its firing
        alerts (the Alertmanager sink re-sends them from now on). A disk error is logged
        and counted (the sink keeps the transition in memory), not raised."""
        with self._submit_lock:
            for worker in self._workers:
                try:
                    worker.sink.record(transition)
                except OutboxError as exc:
                    self.sink_problem = str(exc)
                    self.metrics.write_errors.inc()
                    log.error("%s: %s", worker.sink.name, exc)

    def refresh(self, transitions: list[AlertTransition]) -> None:
        """Firing episodes with recomputed drivers: the Alertmanager sink re-sends them from
        now on (nothing is delivered now). A disk error is logged and counted, not raised."""
        if not transitions:
            return
        with self._submit_lock:
            for worker in self._workers:
                try:
                    worker.sink.refresh(transitions)
                except OutboxError as exc:
                    self.sink_problem = str(exc)
                    self.metrics.write_errors.inc()
                    log.error("%s: %s", worker.sink.name, exc)

    def forget(self, services: Collection[str]) -> None:
        """This replica no longer tracks `services`: the sinks drop their state for them
        (pending deliveries are still delivered). Raises OutboxError."""
        if not services:
            return
        with self._submit_lock:
            for worker in self._workers:
                worker.sink.forget(services)

    def flush(self, timeout_seconds: float) -> bool:
        """Wait until every pending delivery is done with; False if the timeout came first."""
        return self.outbox.wait_empty(timeout_seconds)

    def stop(self, timeout_seconds: float = 5.0) -> bool:
        """Stop the workers; pending deliveries stay in the outbox for the next start.

        A worker in the middle of a request finishes it first (at most the sink's timeout).
        Returns False if one was still busy when `timeout_seconds` ran out; its thread is a
        daemon and does not keep the process alive.
        """
        self._stopping.set()
        for worker in self._workers:
            worker.wake.set()
        deadline = time.monotonic() + timeout_seconds
        for worker in self._workers:
            if worker.thread is not None:
                worker.thread.join(max(0.0, deadline - time.monotonic()))
        busy = [w.sink.name for w in self._workers if w.thread is not None and w.thread.is_alive()]
        if busy:
            log.warning("notifier: %s still in a request after %.1fs; not waiting longer",
                        ", ".join(busy), timeout_seconds)
        return not busy

    def __enter__(self) -> Notifier:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _drop_unknown_sinks(self) -> None:
        names = {worker.sink.name for worker in self._workers}
        for delivery in self.outbox.pending():
            if delivery.sink not in names and self.outbox.remove(delivery):
                log.warning("outbox: dropped a delivery to %s, which is no longer configured",
                            delivery.sink)
                self.metrics.deliveries.labels(delivery.sink, "expired").inc()


class _Metrics:
    def __init__(self, registry: CollectorRegistry, sinks: list[str]) -> None:
        self.deliveries = Counter(
            "sentinel_webhook_deliveries_total",
            "Alert delivery attempts and their fates, by sink (webhookN, alertmanager)",
            ["sink", "outcome"], registry=registry)
        self.pending = Gauge("sentinel_outbox_pending",
                             "Alert deliveries queued on disk, not yet delivered",
                             registry=registry)
        self.write_errors = Counter("sentinel_outbox_write_errors_total",
                                    "Alert deliveries the disk refused (full, unwritable): kept "
                                    "in memory, not crash-safe", registry=registry)
        self.unsaved = Gauge("sentinel_outbox_unsaved",
                             "Pending alert deliveries kept only in memory; offsets wait for them",
                             registry=registry)
        self.corrupt = Counter("sentinel_outbox_corrupt_total",
                               "Unreadable outbox files moved to outbox/corrupt/",
                               registry=registry)
        self.latency = Histogram("sentinel_delivery_latency_seconds",
                                 "Time from queueing an alert transition to its delivery",
                                 ["sink"], buckets=LATENCY_BUCKETS, registry=registry)
        self.resends = Counter("sentinel_alertmanager_resends_total",
                               "Periodic re-sends of firing alerts and the watchdog",
                               ["outcome"], registry=registry)
        for sink in sinks:  # present from the start, so rate() and alerts see zeros
            self.latency.labels(sink)
            for outcome in OUTCOMES:
                self.deliveries.labels(sink, outcome)


class _Worker:
    """Delivers one sink's deliveries in order, on its own thread; also runs its resends."""

    def __init__(self, sink: Sink, notifier: Notifier) -> None:
        self.sink = sink
        self.notifier = notifier
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self._seq = -1  # the head delivery being tried ...
        self._failures = 0  # ... its failed attempts ...
        self._due = 0.0  # ... and the clock() time of its next attempt
        self._resend_due = 0.0
        self._resend_failures = 0

    def run(self) -> None:
        notifier = self.notifier
        self._resend_due = notifier.clock()  # resend at once: a restart may have missed some
        while not notifier._stopping.is_set():
            self.wake.clear()  # before looking, so a submit from now on wakes the wait below
            try:
                delay = self._run_once(notifier.clock())
            except Exception:  # a bug must not end this sink's deliveries; they stay queued
                log.exception("%s: unexpected error in the delivery loop", self.sink.name)
                delay = notifier.config.delivery.initial_backoff_seconds
            if delay is None or delay > 0:
                notifier.wait(self.wake, delay)

    def _run_once(self, now: float) -> float | None:
        """One step; returns how long to wait before the next one (None: until woken)."""
        interval = self.sink.resend_interval_seconds
        if interval is not None and now >= self._resend_due:
            self._resend(interval)
            return 0.0
        resend_in = None if interval is None else self._resend_due - now
        head = self.notifier.outbox.head(self.sink.name)
        if head is None:
            return resend_in
        if head.seq != self._seq:
            self._seq, self._failures, self._due = head.seq, 0, now
        if now < self._due:
            return self._due - now if resend_in is None else min(self._due - now, resend_in)
        self._attempt(head)
        return 0.0

    def _attempt(self, delivery: Delivery) -> None:
        notifier, name, transition = self.notifier, self.sink.name, delivery.transition
        what = f"{transition.state} {transition.episode_key} of {transition.service}"
        now_ts = notifier.wall_clock()
        if now_ts - delivery.created_ts >= notifier.config.delivery.max_age_seconds:
            notifier.metrics.deliveries.labels(name, "expired").inc()  # counted before flush() sees it go
            log.warning("%s: gave up on %s after %d attempts: older than max_age (%.0fs)",
                        name, what, self._failures, notifier.config.delivery.max_age_seconds)
            notifier.outbox.remove(delivery)
            return
        status, headers, problem = self._post(self.sink.request(delivery, now_ts))
        outcome = classify(status)
        notifier.metrics.deliveries.labels(name, outcome).inc()
        if outcome == "delivered":
            latency = max(0.0, notifier.wall_clock() - delivery.created_ts)  # clocks may step
            notifier.metrics.latency.labels(name).observe(latency)
            notifier.outbox.remove(delivery)
            log.info("%s: delivered %s after %d failed attempts", name, what, self._failures)
        elif outcome == "rejected":
            notifier.outbox.remove(delivery)
            log.warning("%s: %s rejected with %s; not retried", name, what, problem)
        else:
            self._failures += 1
            delay = backoff_seconds(self._failures, notifier.config.delivery, notifier.random)
            if status in (429, 503):
                delay = max(delay, retry_after_seconds(headers, now_ts) or 0.0)
            self._due = notifier.clock() + delay
            level = logging.WARNING if self._failures == 1 else logging.DEBUG
            log.log(level, "%s: %s failed (%s), attempt %d; retrying in %.2fs", name, what,
                    problem, self._failures, delay)

    def _resend(self, interval: float) -> None:
        notifier = self.notifier
        request = self.sink.resend(notifier.wall_clock())
        if request is None:
            self._resend_due = notifier.clock() + interval
            return
        status, _, problem = self._post(request)
        if classify(status) == "delivered":
            self._resend_failures = 0
            self._resend_due = notifier.clock() + interval
            notifier.metrics.resends.labels("delivered").inc()
            return
        self._resend_failures += 1
        delay = backoff_seconds(self._resend_failures, notifier.config.delivery, notifier.random)
        self._resend_due = notifier.clock() + min(interval, delay)
        notifier.metrics.resends.labels("failed").inc()
        if self._resend_failures == 1:
            log.warning("%s: re-sending firing alerts failed (%s); retrying", self.sink.name,
                        problem)

    def _post(self, request: Request) -> tuple[int | None, Mapping[str, str], str]:
        """(status or None, response headers, what happened in words)."""
        try:
            status, headers = self.notifier.post(request.url, request.body, request.headers,
                                                 self.sink.timeout_seconds)
        except TransportError as exc:
            return None, {}, str(exc)
        if 300 <= status < 400:  # see sentinel.sinks.transport: never followed
            location = next((v for k, v in headers.items() if k.lower() == "location"), "nowhere")
            return status, headers, (f"HTTP {status} redirect to {mask_url(location)!r} not "
                                     f"followed: configure the final URL")
        return status, headers, f"HTTP {status}"
