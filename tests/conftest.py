"""Shared fixtures: a real Kafka-protocol broker (tansu) on loopback, a small trained model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from broker import TansuBroker  # tests/ is on sys.path: pytest puts a conftest's dir there


@pytest.fixture
def kafka_broker(tmp_path) -> Iterator[TansuBroker]:
    """A fresh, empty tansu broker for one test (starts in ~0.2 s); its log is in tmp_path."""
    with TansuBroker(log_dir=tmp_path) as broker:
        yield broker


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """(model directory, alert threshold): a small LSTM trained once per session on a day of
    4 services (daemon_kit.train_small_model). Copy it before changing anything in it."""
    from daemon_kit import train_small_model

    out = tmp_path_factory.mktemp("model") / "model"
    return out, train_small_model(out)
