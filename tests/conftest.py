"""Shared fixtures from the one test kit (tests/testkit): a real Kafka-protocol broker (tansu)
on loopback, a small trained model, a fake clock, an HTTP receiver and `wait_until`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.testkit.broker import TansuBroker
from tests.testkit.clock import FakeClock
from tests.testkit.http import Receiver
from tests.testkit.wait import wait_until as _wait_until


@pytest.fixture
def kafka_broker(tmp_path) -> Iterator[TansuBroker]:
    """A fresh, empty tansu broker for one test (starts in ~0.2 s); its log is in tmp_path."""
    with TansuBroker(log_dir=tmp_path) as broker:
        yield broker


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """(model directory, alert threshold): a small LSTM trained once per session on a day of
    4 services (testkit.daemon.train_small_model). Copy it before changing anything in it."""
    from tests.testkit.daemon import train_small_model

    out = tmp_path_factory.mktemp("model") / "model"
    return out, train_small_model(out)


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock at 1000.0 that moves only with `advance(seconds)`."""
    return FakeClock()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A plain-HTTP receiver on a free loopback port, stopped after the test."""
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def wait_until() -> Callable[..., object]:
    """`wait_until(condition, timeout_seconds, what)`: the condition's first truthy value."""
    return _wait_until


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """`sentinel.cli.main` configures the root logger onto the (captured) stderr of the test
    that calls it; put it back, or a worker thread of a later test logs into a closed file."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
