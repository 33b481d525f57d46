"""Operator feedback on alert episodes, kept with the history in ``<state.dir>/feedback.jsonl``.

    >>> record_feedback(Path("var"), Feedback("checkout", 1763899200, "false_alarm"), time.time())
    >>> read_feedback(feedback_path(Path("var")))       # the latest verdict per episode
    (Feedback(service='checkout', started_ts=1763899200, verdict='false_alarm', note=''),)

Written by `sentinel feedback` and by the daemon's ``POST /feedback`` (sentinel.daemon.health),
read by the next training (`sentinel train --feedback`, and the retrainer on every run). One
JSON object per line, appended and fsynced: `episode` (``<service>@<startsAt>``, see
sentinel.core.incidents), `service`, `started_ts`, `verdict` (false_alarm | confirmed),
`note`, `recorded_ts` (wall clock). A later verdict on the same episode replaces an earlier
one. A torn or foreign line (a crash mid-append, a hand edit) is skipped with a warning:
losing one verdict is better than a retraining that cannot start.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from sentinel.core.incidents import VERDICTS, Feedback, parse_episode_key
from sentinel.errors import DataError

log = logging.getLogger(__name__)

FILE_NAME = "feedback.jsonl"
MAX_NOTE_CHARS = 1000
MAX_FILE_BYTES = 64 << 20


def feedback_path(state_dir: Path) -> Path:
    return Path(state_dir) / FILE_NAME


def make_feedback(episode: str, verdict: str, note: str = "") -> Feedback:
    """A verdict from outside (CLI, HTTP): the key, verdict and note checked."""
    service, started_ts = parse_episode_key(episode)
    if verdict not in VERDICTS:
        raise DataError(f"verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise DataError(f"note: expected text of at most {MAX_NOTE_CHARS} characters")
    return Feedback(service, started_ts, verdict, note)  # type: ignore[arg-type]


def record_feedback(state_dir: Path, feedback: Feedback, now_ts: float) -> dict[str, object]:
    """Append one verdict durably (O_APPEND: the CLI and the daemon may both write)."""
    path = feedback_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"episode": feedback.episode, "service": feedback.service,
                "started_ts": feedback.started_ts, "verdict": feedback.verdict,
                "note": feedback.note, "recorded_ts": round(now_ts, 3)}
    line = (json.dumps(document, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return document


def read_feedback(path: Path) -> tuple[Feedback, ...]:
    """The latest verdict per episode, in the order episodes were first judged; () when the
    file does not exist."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise DataError(f"feedback file {path}: cannot read it ({exc.strerror})") from exc
    latest: dict[tuple[str, int], Feedback] = {}
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
            item = make_feedback(doc["episode"], doc["verdict"], doc.get("note", ""))
        except (ValueError, KeyError, TypeError, DataError) as exc:
            log.warning("%s:%d: skipped, not a feedback record (%s)", path, n, exc)
            continue
        latest.pop((item.service, item.started_ts), None)  # re-judged: its latest place
        latest[(item.service, item.started_ts)] = item
    return tuple(latest.values())


class FeedbackEndpoint:
    """The daemon's ``POST /feedback`` (served by sentinel.daemon.health): a JSON body
    ``{"episode": "<service>@<startsAt>", "verdict": "false_alarm"|"confirmed", "note": "..."}``
    recorded with `record_feedback`; answers 201 with the record, 400 naming the bad field.
    Counts ``sentinel_feedback_total{verdict}``."""

    def __init__(self, state_dir: Path, registry: CollectorRegistry,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.state_dir, self.wall_clock = Path(state_dir), wall_clock
        self.recorded = Counter("sentinel_feedback", "Operator verdicts on alert episodes "
                                "recorded through POST /feedback", ["verdict"], registry=registry)

    def __call__(self, body: bytes) -> tuple[int, dict[str, object]]:
        try:
            doc = json.loads(body)
        except ValueError:
            return 400, {"error": "the body must be a JSON object: {\"episode\": "
                                  "\"<service>@<startsAt>\", \"verdict\": \"false_alarm\"}"}
        if not isinstance(doc, dict) or not isinstance(doc.get("episode"), str):
            return 400, {"error": "field episode: expected \"<service>@<startsAt>\" (the alert's "
                                  "service label and startsAt, or its episode annotation)"}
        try:
            item = make_feedback(doc["episode"], doc.get("verdict"),  # type: ignore[arg-type]
                                 doc.get("note", ""))
            record = record_feedback(self.state_dir, item, self.wall_clock())
        except DataError as exc:
            return 400, {"error": str(exc)}
        except OSError as exc:
            log.error("cannot record feedback in %s: %s", self.state_dir, exc)
            return 503, {"error": f"cannot record it: {exc.strerror}"}
        self.recorded.labels(item.verdict).inc()
        log.info("feedback %s on episode %s", item.verdict, item.episode)
        return 201, record
