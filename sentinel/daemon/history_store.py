"""The history store: every closed bucket, as the contract's sample JSONL, in hourly segments.

    >>> store = HistoryStore.from_config(config, metrics=prometheus_registry)
    >>> store.append(result.buckets)   # the daemon, after each live poll; never raises
    >>> store.span()                   # (first_ts, last_ts): the event time it holds
    (1763942400, 1764028790)

A segment is `<state.dir>/history/<YYYYmmddTHH>-<replica>.jsonl`: the buckets whose event
time falls in that UTC hour, one sample line each (`{"service", "ts", "metrics"}`, finite
values only; an empty step is no line), appended in one `write` per poll. So `sentinel train
--history <state.dir>/history` reads it through the same decode and bucketing as any
recorded file, and several replicas can share one directory.

- **Restarts.** Segments are only appended to. A line torn by a crash mid-write is cut off
  when the store opens. Records read again after a crash close their buckets again: the
  duplicate lines merge into the same bucket when read.
- **Retention.** By event time: a segment is deleted once its hour ended more than
  `history.retention` before the newest bucket stored, and the oldest segments go while the
  total exceeds `history.max_bytes`.
- **Corruption.** `find_corrupt` names the segments holding a line that is no valid sample;
  the retrainer trains without them and `quarantine` renames them to `*.jsonl.corrupt`
  (kept for inspection, never read), logged and counted: a corrupt segment loses at most
  itself.
- **Disk errors.** A failed write (disk full, read-only) is undone as far as possible
  (truncated back), counted in `sentinel_history_write_errors_total` and kept in `problem`
  (the daemon shows it in /readyz as degraded) until a write succeeds again. It never
  raises: scoring goes on without history.

Lines are written to the OS at every poll, before the daemon commits the offsets, and
fsynced when a segment is closed: a process crash loses nothing, a power loss may lose
the last seconds of the newest segment.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from sentinel.config.schema import Config
from sentinel.core.buckets import Bucket
from sentinel.core.features import tracked_metrics
from sentinel.core.samples import Rejection, decode
from sentinel.logs import LogThrottle

log = logging.getLogger(__name__)

SUFFIX, CORRUPT_SUFFIX = ".jsonl", ".corrupt"
HOUR_FORMAT = "%Y%m%dT%H"
OPEN_SEGMENTS = 2  # the current hour and the one before (late buckets across the hour)
_SEGMENT_RE = re.compile(r"(\d{8}T\d{2})-(.+)\.jsonl")


def segment_hour(name: str) -> int | None:
    """Unix time of the hour a segment file name stands for; None for other files."""
    match = _SEGMENT_RE.fullmatch(name)
    if not match:
        return None
    return calendar.timegm(time.strptime(match[1], HOUR_FORMAT))


class HistoryStore:
    def __init__(self, directory: Path, metrics: tuple[str, ...], retention_seconds: float,
                 max_bytes: int, replica: str | None = None,
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.metrics = metrics
        self.retention_seconds, self.max_bytes = retention_seconds, max_bytes
        self.replica = re.sub(r"[^A-Za-z0-9_.-]", "_", replica or socket.gethostname()) or "local"
        self.clock = clock
        self.problem: str | None = None
        self._fds: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._first_ts: dict[str, int] = {}
        self._newest_ts: int | None = None
        self._quoted_metrics = [json.dumps(name) for name in self.metrics]
        self._hour_names: dict[int, str] = {}  # strftime per bucket costs more than the write
        self._write_trouble = LogThrottle(log)
        # the daemon's loop appends; the retrainer reads the span and sets segments aside
        self._lock = threading.RLock()
        r = registry or CollectorRegistry()
        self.written = Counter("sentinel_history_buckets_total",
                               "Closed buckets written to the history store", registry=r)
        self.write_errors = Counter("sentinel_history_write_errors_total",
                                    "History writes that failed (disk full, unwritable): that "
                                    "history is lost, scoring goes on", registry=r)
        self.corrupt = Counter("sentinel_history_corrupt_segments_total",
                               "History segments found corrupt and set aside (*.corrupt)",
                               registry=r)
        self.pruned = Counter("sentinel_history_pruned_segments_total",
                              "History segments deleted by retention (age or size)", ["reason"],
                              registry=r)
        self.bytes = Gauge("sentinel_history_bytes", "Bytes in history segments", registry=r)
        self.segments = Gauge("sentinel_history_segments", "History segment files", registry=r)
        for reason in ("age", "size"):
            self.pruned.labels(reason)
        self._open()

    @classmethod
    def from_config(cls, config: Config, registry: CollectorRegistry | None = None
                    ) -> HistoryStore:
        return cls(Path(config.state.dir) / "history", tracked_metrics(config),
                   config.history.retention_seconds, config.history.max_bytes,
                   config.history.replica, registry)

    # --- writing ---

    def append(self, buckets: Iterable[Bucket]) -> int:
        """Write the buckets' lines; returns how many. Never raises: see `problem`."""
        with self._lock:
            return self._append(buckets)

    def _append(self, buckets: Iterable[Bucket]) -> int:
        lines: dict[str, list[str]] = {}
        newest = self._newest_ts
        for bucket in buckets:
            line = self.encode(bucket)
            if line is None:
                continue
            lines.setdefault(self.segment_name(bucket.ts), []).append(line)
            newest = bucket.ts if newest is None else max(newest, bucket.ts)
        if not lines:
            return 0
        written = 0
        try:
            for name, chunk in sorted(lines.items()):
                self._write(name, ("\n".join(chunk) + "\n").encode())
                written += len(chunk)
        except OSError as exc:
            self._failed(exc)
        else:
            if self.problem is not None:
                log.info("history writes to %s work again", self.directory)
            self.problem = None
        self.written.inc(written)
        rolled = newest != self._newest_ts and (self._newest_ts is None
                                                or newest // 3600 != self._newest_ts // 3600)
        self._newest_ts = newest
        if rolled or sum(self._sizes.values()) > self.max_bytes:
            self.prune()
        self._export()
        return written

    def encode(self, bucket: Bucket) -> str | None:
        """The sample line of a bucket (finite values only); None for an empty step.

        Written by hand for speed, byte for byte what ``json.dumps(..., separators=(",", ":"))``
        writes: names and the service JSON-quoted, floats by `repr`."""
        metrics = ",".join(f"{quoted}:{float(v)!r}" for quoted, v in zip(
            self._quoted_metrics, bucket.values.tolist(), strict=True) if math.isfinite(v))
        if not metrics:
            return None
        return f'{{"service":{json.dumps(bucket.service)},"ts":{int(bucket.ts)},"metrics":{{{metrics}}}}}'

    def segment_name(self, ts: float) -> str:
        hour = int(ts // 3600)
        name = self._hour_names.get(hour)
        if name is None:
            if len(self._hour_names) > 48:
                self._hour_names.clear()
            name = self._hour_names[hour] = (
                f"{time.strftime(HOUR_FORMAT, time.gmtime(hour * 3600))}-{self.replica}{SUFFIX}")
        return name

    def prune(self) -> None:
        """Retention: segments past `retention` (event time), then the oldest beyond max_bytes."""
        with self._lock:
            self._prune()

    def _prune(self) -> None:
        if self._newest_ts is None:
            return
        horizon = self._newest_ts - self.retention_seconds
        for name in sorted(self._sizes):
            hour = segment_hour(name)
            if hour is not None and hour + 3600 <= horizon:
                self._delete(name, "age")
        for name in sorted(self._sizes):
            if sum(self._sizes.values()) <= self.max_bytes or len(self._sizes) <= 1:
                break
            self._delete(name, "size")
        self._export()

    def quarantine(self, names: Iterable[str]) -> None:
        """Set corrupt segments aside as `<name>.corrupt`: never read again, kept to inspect."""
        with self._lock:
            self._quarantine(names)

    def _quarantine(self, names: Iterable[str]) -> None:
        for name in names:
            self._close(name)
            try:
                os.replace(self.directory / name, self.directory / (name + CORRUPT_SUFFIX))
            except FileNotFoundError:
                continue  # pruned meanwhile
            except OSError as exc:
                log.error("cannot set corrupt history segment %s aside: %s", name, exc)
                continue
            self._sizes.pop(name, None)
            self._first_ts.pop(name, None)
            self.corrupt.inc()
            log.error("history segment %s is corrupt: set aside as %s%s, not trained on",
                      name, name, CORRUPT_SUFFIX,
                      extra={"fields": {"event": "history_corrupt", "segment": name}})
        self._export()

    def close(self) -> None:
        with self._lock:
            for name in list(self._fds):
                self._close(name)

    # --- reading ---

    def span(self) -> tuple[int, int] | None:
        """(first_ts, last_ts) of the buckets stored, by event time; None when empty."""
        with self._lock:
            return self._span()

    def _span(self) -> tuple[int, int] | None:
        if self._newest_ts is None or not self._sizes:
            return None
        for name in sorted(self._sizes):
            first = self._first_ts.get(name)
            if first is None:
                first = _first_line_ts(self.directory / name)
                if first is None:
                    continue
                self._first_ts[name] = first
            return first, self._newest_ts
        return None

    # --- internals ---

    def _open(self) -> None:
        """Scan the directory: sizes, torn tails cut off, the newest event time."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            names = sorted(p.name for p in self.directory.iterdir() if _SEGMENT_RE.fullmatch(p.name))
            for name in names:
                self._sizes[name] = _repair_tail(self.directory / name)
            if names:
                self._newest_ts = max((ts for ts in (_last_line_ts(self.directory / n)
                                                     for n in names[-OPEN_SEGMENTS * 4:])
                                       if ts is not None), default=None)
        except OSError as exc:
            self._failed(exc)
        self._export()

    def _write(self, name: str, data: bytes) -> None:
        fd = self._fds.get(name)
        if fd is None:
            fd = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._fds[name] = fd
            self._sizes[name] = os.fstat(fd).st_size
            for old in sorted(self._fds)[:-OPEN_SEGMENTS]:
                if old != name:  # a late bucket may open an hour older than the open ones
                    self._close(old)
        size = self._sizes[name]
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # no half line for the next append to follow
            self._close(name)
            raise
        self._sizes[name] = size + len(data)

    def _close(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)

    def _delete(self, name: str, reason: str) -> None:
        self._close(name)
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete history segment %s: %s", name, exc)
            return
        self._sizes.pop(name, None)
        self._first_ts.pop(name, None)
        self.pruned.labels(reason).inc()
        log.info("history segment %s deleted (%s retention)", name, reason)

    def _failed(self, exc: OSError) -> None:
        self.write_errors.inc()
        self.problem = f"cannot write history to {self.directory}: {exc}"
        self._write_trouble.log(self.clock(), logging.ERROR,
                                "%s; scoring goes on without history (logged once a minute)",
                                self.problem, extra={"fields": {"event": "history_write_error"}})

    def _export(self) -> None:
        self.bytes.set(sum(self._sizes.values()))
        self.segments.set(len(self._sizes))


def find_corrupt(directory: Path) -> list[tuple[str, int, str]]:
    """(segment, line number, reason) of each segment with a line that is no valid sample.

    Runs in the training child, while the daemon may append: a last line without its
    newline yet is not judged."""
    bad = []
    for path in sorted(Path(directory).glob("*" + SUFFIX)):
        try:
            with path.open("rb") as handle:
                for number, raw in enumerate(handle, 1):
                    if not raw.strip() or not raw.endswith(b"\n"):
                        continue  # the last line of a segment being appended to right now
                    decoded = decode(raw.rstrip(b"\n"))
                    if isinstance(decoded, Rejection):
                        bad.append((path.name, number, f"{decoded.reason}: {decoded.detail}"))
                        break
        except OSError as exc:
            bad.append((path.name, 0, f"unreadable: {exc}"))
    return bad


def _repair_tail(path: Path) -> int:
    """Cut a torn last line (a crash mid-write) off; returns the size after."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return size
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            chunk = handle.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        handle.truncate(end)
    log.warning("history segment %s ended in a torn line (a crash mid-write): cut %d bytes",
                path.name, size - end)
    return end


def _first_line_ts(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            for raw in handle:
                decoded = decode(raw)
                if not isinstance(decoded, Rejection):
                    return int(decoded.ts)
    except OSError:
        return None
    return None


def _last_line_ts(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 65536))
            lines = handle.read().splitlines()
    except OSError:
        return None
    for raw in reversed(lines):
        decoded = decode(raw)
        if not isinstance(decoded, Rejection):
            return int(decoded.ts)
    return None
