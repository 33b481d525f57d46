"""The history store as the retraining tests use it: the shipped config, a store in a
directory, synthetic buckets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from prometheus_client import CollectorRegistry

from sentinel.config.load import parse_config
from sentinel.core.buckets import Bucket
from sentinel.core.features import tracked_metrics
from sentinel.daemon.history_store import HistoryStore
from tests.testkit.daemon import BASE_CONFIG

CONFIG = parse_config(yaml.safe_load(BASE_CONFIG.read_text()), str(BASE_CONFIG))


# --- the history store ----------------------------------------------------------------------

T0 = 1_763_942_400  # 2025-11-24T00:00Z, where the simulator starts


def store_at(directory: Path, metrics: CollectorRegistry | None = None, **options) -> HistoryStore:
    settings = {"retention_seconds": 7 * 86400.0, "max_bytes": 1 << 30, "replica": "r1", **options}
    return HistoryStore(directory, tracked_metrics(CONFIG), registry=metrics, **settings)


def synthetic(service: str, ts: int, value: float = 1.0) -> Bucket:
    return Bucket(service, ts, np.full(len(tracked_metrics(CONFIG)), value), 1)
