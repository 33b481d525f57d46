"""Logging set-up for every entry point (the CLI and the retraining child process).

Plain lines on a terminal, one JSON object per line otherwise (journald, kubectl logs).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any


def setup_logging(level: str) -> None:
    """Plain lines on a terminal, one JSON object per line otherwise (journald, kubectl)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if not sys.stderr.isatty() else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


LOG_EVERY_SECONDS = 60.0  # a recurring problem is logged once a minute, not once a poll


class LogThrottle:
    """Logs a recurring problem at most once per `every_seconds`; time is passed in.

        >>> trouble = LogThrottle(log)
        >>> trouble.log(now, logging.WARNING, "Kafka trouble (retrying; logged once a minute): %s", exc)
        >>> if trouble.active: log.info("Kafka is reachable again")
        >>> trouble.reset()      # the problem is over: the next one is logged at once
    """

    def __init__(self, logger: logging.Logger, every_seconds: float = LOG_EVERY_SECONDS) -> None:
        self.logger = logger
        self.every_seconds = every_seconds
        self.logged_at: float | None = None

    @property
    def active(self) -> bool:
        """Whether the problem was logged since the last reset."""
        return self.logged_at is not None

    def log(self, now: float, level: int, message: str, *args: object, **kwargs: Any) -> bool:
        """Log unless it was logged less than `every_seconds` ago; whether it logged."""
        if self.logged_at is not None and now - self.logged_at < self.every_seconds:
            return False
        self.logger.log(level, message, *args, stacklevel=2, **kwargs)
        self.logged_at = now
        return True

    def reset(self) -> None:
        self.logged_at = None
