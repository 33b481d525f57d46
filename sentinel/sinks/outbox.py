"""A small durable queue of alert deliveries: one JSON file per delivery in a directory.

    >>> outbox = Outbox(Path(state_dir) / "outbox", max_pending=10000)
    >>> outbox.put(Delivery("webhook0", transition, created_ts=time.time()))  # durable now
    []
    >>> outbox.head("webhook0").transition.service
    'checkout'
    >>> outbox.remove(outbox.head("webhook0"))
    True

`put` returns once the file is on disk (written to a temporary name, fsynced, renamed,
directory fsynced), so a queued alert survives a crash at any instant. When the disk
refuses the write (full, read-only, the directory gone) the delivery is kept in memory
instead and delivered all the same: an alert must not wait for a disk. It is *unsaved*
(`unsaved()` counts them, `problem` says why) until it is delivered; the daemon commits no
Kafka offset while one is, so a crash meanwhile re-reads the records and queues it again.
Removal is not fsynced: a removal lost in a crash means one more delivery, which the
receiver dedupes by its Idempotency-Key (at-least-once).

Files are named by a sequence number, so a restart re-loads them in the order they were put.
A file that cannot be parsed is moved to `corrupt/` and counted, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sentinel.atomic import TMP_SUFFIX, write_atomic
from sentinel.core.alerts import AlertTransition
from sentinel.errors import OutboxError
from sentinel.logs import LogThrottle

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"([0-9]{20})\.json")



@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert transition on its way to one sink."""

    sink: str  # the sink's name, e.g. "webhook0"
    transition: AlertTransition
    created_ts: float  # wall clock when queued: its age survives restarts
    seq: int = -1  # set by Outbox.put; orders the deliveries

    def to_json(self) -> dict[str, object]:
        return {"sink": self.sink, "created_ts": self.created_ts,
                "transition": transition_to_json(self.transition)}

    @classmethod
    def from_json(cls, raw: object, seq: int) -> Delivery:
        """Raises ValueError on anything that is not a delivery written by `to_json`."""
        if not isinstance(raw, dict) or not isinstance(raw.get("sink"), str):
            raise ValueError("not a delivery: expected an object with a 'sink' string")
        created_ts = raw.get("created_ts")
        if not (_is_int(created_ts) or isinstance(created_ts, float)):
            raise ValueError(f"created_ts must be a number, got {created_ts!r}")
        return cls(raw["sink"], transition_from_json(raw.get("transition")), created_ts, seq)


def transition_to_json(transition: AlertTransition) -> dict[str, object]:
    return {**transition.to_json(), "risk": transition.risk, "started_ts": transition.started_ts}


def transition_from_json(raw: object) -> AlertTransition:
    """Raises ValueError on anything that is not a transition written by `transition_to_json`."""
    keys = ("service", "state", "ts", "risk", "started_ts")
    service, state, ts, risk, started_ts = (raw.get(k) for k in keys) if isinstance(
        raw, dict) else (None,) * 5
    if not (isinstance(service, str) and state in ("firing", "resolved") and _is_int(ts)
            and _is_int(started_ts) and (_is_int(risk) or isinstance(risk, float))):
        raise ValueError(f"not an alert transition: {raw!r}")
    phase = raw.get("phase", "predicted")  # type: ignore[union-attr]
    if phase not in ("predicted", "failing"):
        raise ValueError(f"not an alert transition (phase {phase!r}): {raw!r}")
    cause = raw.get("cause_service")  # type: ignore[union-attr]
    if cause is not None and not isinstance(cause, str):
        raise ValueError(f"not an alert transition (cause_service {cause!r}): {raw!r}")
    planned = raw.get("planned_event", "")  # type: ignore[union-attr]
    if not isinstance(planned, str):
        raise ValueError(f"not an alert transition (planned_event {planned!r}): {raw!r}")
    return AlertTransition(service, state, ts, float(risk), started_ts, phase, cause_service=cause,
                           planned_event=planned)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Outbox:
    """Pending deliveries of all sinks; thread-safe. At most `max_pending` are kept."""

    def __init__(self, directory: str | Path, max_pending: int = 10000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.max_pending = max_pending
        self.corrupt_total = 0  # files moved to corrupt/
        self.write_errors = 0  # puts the disk refused (kept in memory instead)
        self.problem: str | None = None  # the last write error, until a write succeeds
        self.clock = clock
        self._write_trouble = LogThrottle(log)
        self._unsaved: set[int] = set()  # seqs of pending deliveries that have no file
        self._changed = threading.Condition()
        self._write_lock = threading.Lock()  # serialises puts: file order = sequence order
        self._pending: dict[int, Delivery] = {}  # seq -> delivery, oldest first
        self._by_sink: dict[str, dict[int, Delivery]] = {}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error("create", exc) from exc
        self._next_seq = self._load() + 1

    def put(self, delivery: Delivery) -> list[Delivery]:
        """Store `delivery` durably; returns the oldest deliveries dropped to make room.

        Blocks for the disk writes (a few ms). Never raises: a delivery the disk refuses is
        kept in memory (see `unsaved`, `problem`).
        """
        with self._write_lock:
            stored = replace(delivery, seq=self._next_seq)
            data = json.dumps(stored.to_json(), separators=(",", ":")).encode()
            try:
                write_atomic(self._path(stored.seq), data)
                saved = True
            except OSError as exc:
                saved = False
                self._write_failed(exc)
            self._next_seq += 1
            with self._changed:
                if saved:
                    self.problem = None
                else:
                    self._unsaved.add(stored.seq)
                self._add(stored)
                dropped = []
                while len(self._pending) > self.max_pending:
                    dropped.append(self._pop(next(iter(self._pending))))
            for old in dropped:
                log.warning("outbox full (max_pending=%d): dropped the oldest delivery, %s %s "
                            "of %s for %s", self.max_pending, old.transition.state,
                            old.transition.episode_key, old.transition.service, old.sink)
                self._unlink(old.seq)
            return dropped

    def unsaved(self) -> int:
        """Pending deliveries that are only in memory: the disk refused their file."""
        with self._changed:
            return len(self._unsaved)

    def head(self, sink: str) -> Delivery | None:
        """The oldest pending delivery of `sink`."""
        with self._changed:
            queue = self._by_sink.get(sink)
            return next(iter(queue.values())) if queue else None

    def pending(self) -> list[Delivery]:
        """All pending deliveries, oldest first."""
        with self._changed:
            return list(self._pending.values())

    def remove(self, delivery: Delivery) -> bool:
        """Forget a delivered (or given up) delivery; False if it was no longer pending."""
        with self._changed:
            if delivery.seq not in self._pending:
                return False
            self._pop(delivery.seq)
            self._changed.notify_all()
        self._unlink(delivery.seq)
        return True

    def wait_empty(self, timeout_seconds: float) -> bool:
        """Block until nothing is pending or the timeout passes; True if empty."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending, timeout_seconds)

    def __len__(self) -> int:
        with self._changed:
            return len(self._pending)

    def quarantine(self, path: Path, reason: str) -> None:
        """Move an unreadable file to `corrupt/` (kept for a human to look at) and count it."""
        self.corrupt_total += 1
        target = self.directory / "corrupt" / path.name
        try:
            target.parent.mkdir(exist_ok=True)
            n = 0
            while target.exists():
                n += 1
                target = target.with_name(f"{path.name}.{n}")
            os.replace(path, target)
            log.warning("outbox: moved corrupt %s to %s: %s", path.name, target, reason)
        except OSError as exc:
            log.error("outbox: corrupt %s (%s) cannot be moved aside: %s", path, reason, exc)

    def _load(self) -> int:
        """Re-load pending deliveries in sequence order; returns the highest sequence seen."""
        highest = 0
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith(".") and path.name.endswith(TMP_SUFFIX):
                # A put that crashed before its rename never returned, so no offset was
                # committed for it: the alert will be produced again by the replay.
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            match = _NAME_RE.fullmatch(path.name)
            if not match or not path.is_file():
                continue
            seq = int(match[1])
            highest = max(highest, seq)
            try:
                self._add(Delivery.from_json(json.loads(path.read_bytes()), seq))
            except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeError are ValueErrors
                self.quarantine(path, str(exc))
        if self._pending:
            log.info("outbox: %d pending deliveries re-loaded from %s", len(self._pending),
                     self.directory)
        return highest

    def _add(self, delivery: Delivery) -> None:
        self._pending[delivery.seq] = delivery
        self._by_sink.setdefault(delivery.sink, {})[delivery.seq] = delivery

    def _pop(self, seq: int) -> Delivery:
        delivery = self._pending.pop(seq)
        del self._by_sink[delivery.sink][seq]
        return delivery

    def _write_failed(self, exc: OSError) -> None:
        self.write_errors += 1
        self.problem = str(self._error("write to", exc))
        self._write_trouble.log(self.clock(), logging.ERROR,
                                "%s (kept in memory and delivered; no offset is committed until "
                                "it is; logged once a minute)", self.problem)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}.json"

    def _unlink(self, seq: int) -> None:
        with self._changed:
            if seq in self._unsaved:  # never had a file
                self._unsaved.discard(seq)
                return
        try:
            self._path(seq).unlink(missing_ok=True)
        except OSError as exc:  # left behind, it is delivered again after a restart
            log.warning("outbox: cannot remove %s: %s", self._path(seq), exc)

    def _error(self, action: str, exc: OSError) -> OutboxError:
        return OutboxError(f"cannot {action} the alert outbox {self.directory}: {exc}; alerts are "
                           f"not being queued: check that state.dir is writable and has space")
