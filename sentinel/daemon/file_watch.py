"""A file the daemon re-reads when it changes (the topology file, the sale calendar).

    >>> watched = ChangedFile(path, interval_seconds=5.0)
    >>> if watched.changed(now=time.monotonic()):   # at most one stat() per interval
    ...     reread(path)

A change is a new (mtime, size). A file that is gone (or not readable) is no change: its
reader keeps what it last read.
"""

from __future__ import annotations

import os
from pathlib import Path


def stamp(path: Path) -> tuple[int, int] | None:
    """(mtime in ns, size) of `path`, None when it cannot be stat'ed."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class ChangedFile:
    def __init__(self, path: Path, interval_seconds: float) -> None:
        self.path = path
        self.interval_seconds = interval_seconds
        self._seen = stamp(path)  # what the reader read at start-up
        self._due = -float("inf")

    def changed(self, now: float) -> bool:
        """Has the file changed since the last time this said so (checked at most every
        `interval_seconds` of `now`)?"""
        if now < self._due:
            return False
        self._due = now + self.interval_seconds
        current = stamp(self.path)
        if current is None or current == self._seen:
            return False
        self._seen = current
        return True
