"""The daemon's sale calendar: `calendar.file`, re-read when it changes, and `calendar.topic`.

    >>> live = LiveCalendar.from_config(config)            # ConfigError now for a bad file
    >>> Pipeline(config, model, alerting, {"calendar": live})

A context provider (sentinel.core.context) whose events are the file's plus the topic's (an
event on the topic replaces the file's event of the same name). The file is checked at most
every `calendar.reload_interval` (its mtime and size), from the scoring loop: a check is one
`stat`. A file that became unreadable or invalid keeps the last good events, with one error
logged per change; a deleted file keeps them too (an empty file means no events).

The topic (compacted, keyed by event name; the value is the event as JSON, or no value to
delete it) is read from its beginning by a background thread with its own consumer (no
group, no commits): the daemon always holds the whole calendar. `sentinel calendar add`
and `remove` produce to it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.config.calendar_file import parse_event, read_calendar
from sentinel.config.schema import Config, SaleEvent
from sentinel.core.calendar import CALENDAR_CHANNELS, calendar_channels, event_at
from sentinel.core.context import ContextBatch
from sentinel.daemon.file_watch import ChangedFile
from sentinel.errors import ConfigError, SentinelError

log = logging.getLogger(__name__)


class LiveCalendar:
    name = "calendar"

    def __init__(self, path: str | None, reload_interval_seconds: float,
                 topic: CalendarTopic | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path) if path else None
        self.reload_interval_seconds = reload_interval_seconds
        self.topic, self.clock = topic, clock
        self._file_events: tuple[SaleEvent, ...] = ()
        self._file: ChangedFile | None = None
        self.reloads = 0
        if self.path is not None:
            self._file = ChangedFile(self.path, reload_interval_seconds)
            self._file_events = read_calendar(self.path)  # at start-up: a bad file is fatal

    @classmethod
    def from_config(cls, config: Config, security: dict[str, Any] | None = None
                    ) -> LiveCalendar | None:
        cfg = config.calendar
        if cfg.file is None and cfg.topic is None:
            return None
        topic = None
        if cfg.topic is not None:
            topic = CalendarTopic(config.kafka.bootstrap_servers, cfg.topic, security)
        return cls(cfg.file, cfg.reload_interval_seconds, topic)

    def channels(self) -> tuple[str, ...]:
        return CALENDAR_CHANNELS

    def build(self, batch: ContextBatch) -> np.ndarray:
        return calendar_channels(batch.services, batch.step_ts(), self.events())

    def event_at(self, service: str, ts: float) -> SaleEvent | None:
        return event_at(self.events(), service, ts)

    def events(self) -> tuple[SaleEvent, ...]:
        self._maybe_reload()
        if self.topic is None:
            return self._file_events
        merged = {e.name: e for e in self._file_events}
        merged.update(self.topic.events())
        return tuple(sorted(merged.values(), key=lambda e: (e.start_ts, e.name)))

    def _maybe_reload(self) -> None:
        if self._file is None or not self._file.changed(self.clock()):
            return  # unchanged, or gone: keep the last good events
        assert self.path is not None
        try:
            self._file_events = read_calendar(self.path)
        except (ConfigError, OSError) as exc:
            log.error("calendar file %s is not usable, keeping its last good %d events: %s",
                      self.path, len(self._file_events), exc)
            return
        self.reloads += 1
        log.info("calendar file %s reloaded: %d events", self.path, len(self._file_events))

    def start(self) -> None:
        if self.topic is not None:
            self.topic.start()

    def stop(self) -> None:
        if self.topic is not None:
            self.topic.stop()


class CalendarTopic:
    """The events of a compacted topic keyed by name, read from the beginning and followed."""

    def __init__(self, bootstrap_servers: Sequence[str], topic: str,
                 security: dict[str, Any] | None = None, poll_timeout_seconds: float = 1.0
                 ) -> None:
        self.bootstrap_servers, self.topic = list(bootstrap_servers), topic
        self.security = dict(security or {})
        self.poll_timeout_seconds = poll_timeout_seconds
        self._events: dict[str, SaleEvent] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.caught_up = threading.Event()  # set once the backlog has been read

    def events(self) -> dict[str, SaleEvent]:
        with self._lock:
            return dict(self._events)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sentinel-calendar", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record: an event (JSON) under its name, or a tombstone deleting it."""
        name = key.decode("utf-8", "replace") if key else None
        if name is None:
            log.warning("calendar topic %s: a record without a key (the event name) ignored",
                        self.topic)
            return
        if value is None:
            with self._lock:
                self._events.pop(name, None)
            return
        try:
            event = parse_event(json.loads(value), f"{self.topic}[{name}]")
        except (ValueError, ConfigError) as exc:
            log.warning("calendar topic %s: record %r ignored: %s", self.topic, name, exc)
            return
        with self._lock:
            if event.name != name:
                log.warning("calendar topic %s: record key %r names event %r; kept under the key",
                            self.topic, name, event.name)
            self._events[name] = event

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._follow()
            except Exception as exc:  # a broker outage: retry, the last events stay in use
                log.warning("calendar topic %s: %s; retrying in 5 s", self.topic, exc)
                self._stopping.wait(5.0)

    def _follow(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap_servers, group_id=None,
                                 enable_auto_commit=False, **self.security)
        try:
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise SentinelError(f"no such topic {self.topic!r} (yet)")
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            end = consumer.end_offsets(assigned)
            while not self._stopping.is_set():
                batches = consumer.poll(timeout_ms=int(self.poll_timeout_seconds * 1000))
                for records in batches.values():
                    for record in records:
                        self.apply(record.key, record.value)
                if not self.caught_up.is_set() and all(
                        consumer.position(tp) >= end[tp] for tp in assigned):
                    self.caught_up.set()
                    log.info("calendar topic %s read: %d events", self.topic, len(self._events))
        finally:
            consumer.close()


def publish(bootstrap_servers: Sequence[str], topic: str, name: str, event: SaleEvent | None,
            security: dict[str, Any] | None = None) -> None:
    """Put `event` on the calendar topic under `name` (None: a tombstone that deletes it)."""
    from sentinel.config.calendar_file import event_document
    from sentinel.daemon.kafka_client import kafka_errors, make_producer

    producer = make_producer(bootstrap_servers, security, acks="all")
    try:
        value = None if event is None else json.dumps(event_document(event)).encode()
        with kafka_errors(f"cannot write to the calendar topic {topic}"):
            producer.send(topic, key=name.encode(), value=value).get(timeout=10)
    finally:
        producer.close()


def read_topic(bootstrap_servers: Sequence[str], topic: str, security: dict[str, Any] | None = None,
               timeout_seconds: float = 10.0) -> dict[str, SaleEvent]:
    """The calendar topic's events now (read to its end); SentinelError if it cannot be read."""
    reader = CalendarTopic(bootstrap_servers, topic, security, poll_timeout_seconds=0.2)
    reader.start()
    try:
        if not reader.caught_up.wait(timeout_seconds):
            raise SentinelError(f"could not read the calendar topic {topic} within "
                                f"{timeout_seconds:.0f}s (broker down, or no such topic?)")
        return reader.events()
    finally:
        reader.stop()
