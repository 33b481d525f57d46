"""Where a restart must begin its rebuild so that the alert episodes still firing are known.

    >>> hints = RebuildHints(Path(state_dir) / "rebuild-hints.json", "sentinel.metrics", "sentinel")
    >>> hints.save({0: 18250})      # the daemon, before a commit: partition -> offset
    >>> hints.get(0)                # the consumer, when partition 0 is assigned again
    18250

After an assignment the consumer re-reads `kafka.rebuild_messages` records before the
committed offset to refill windows and alert state. An episode that began before that range
would be unknown after a restart: its resolve never sent (the receiver keeps it firing for
ever) and, while the risk stays high, a new episode under a new key. So, per partition, the
daemon keeps the offset of the poll in which the oldest episode still firing began, and a
restart rebuilds from `min(committed, hint) - rebuild_messages`: the replay then fires the
same episode at the same step (same key), and its resolve goes out as it would have.

The file is local (`state.dir`): it serves a restart of the same replica (a crash, a
deploy). For a replica taking a partition over from another, the same offset travels as the
committed offset's metadata (sentinel.daemon.kafka_io); where the broker drops that metadata, the
documented limit of `rebuild_messages` still holds. Writes happen only when a hint changes
(alert transitions are rare) and never raise: without the file a restart rebuilds as before.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sentinel.atomic import write_atomic

log = logging.getLogger(__name__)


class RebuildHints:
    def __init__(self, path: Path, topic: str, group_id: str) -> None:
        self.path, self.topic, self.group_id = path, topic, group_id
        self._hints: dict[int, int] = {}
        try:
            doc = json.loads(path.read_text())
            if doc.get("topic") == topic and doc.get("group_id") == group_id:
                self._hints = {int(p): int(o) for p, o in doc["partitions"].items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable rebuild hints %s: %s", path, exc)

    def get(self, partition: int) -> int | None:
        """The offset a rebuild of `partition` must cover, if an episode was firing on it."""
        return self._hints.get(partition)

    def save(self, hints: dict[int, int]) -> None:
        """Replace the hints (atomically, only when they changed); never raises."""
        if hints == self._hints:
            return
        doc = {"topic": self.topic, "group_id": self.group_id,
               "partitions": {str(p): o for p, o in sorted(hints.items())}}
        try:
            write_atomic(self.path, json.dumps(doc).encode())
        except OSError as exc:
            log.warning("cannot save rebuild hints to %s: %s (a restart may not know the "
                        "alert episodes firing now)", self.path, exc)
        self._hints = dict(hints)  # tried again at the next change, not at every commit
