"""Shared fixtures: a real Kafka-protocol broker (tansu) on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from broker import TansuBroker  # tests/ is on sys.path: pytest puts a conftest's dir there


@pytest.fixture
def kafka_broker(tmp_path) -> Iterator[TansuBroker]:
    """A fresh, empty tansu broker for one test (starts in ~0.2 s); its log is in tmp_path."""
    with TansuBroker(log_dir=tmp_path) as broker:
        yield broker
