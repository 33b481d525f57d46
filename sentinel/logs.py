"""Logging set-up for every entry point (the CLI and the retraining child process).

Plain lines on a terminal, one JSON object per line otherwise (journald, kubectl logs).
"""

from __future__ import annotations

import json
import logging
import os
import sys


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
