"""sd_notify against a real AF_UNIX datagram socket, as systemd listens on NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.daemon.sdnotify import SystemdNotifier


class NotifySocket:
    """What systemd does: a bound AF_UNIX datagram socket; each datagram is one message."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def messages(self) -> list[str]:
        """Every datagram received so far, without waiting for more."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(2.0)
        return out

    def next(self) -> str:
        return self.sock.recv(4096).decode()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[NotifySocket, str]]:
    path = str(tmp_path / "notify.sock")
    server = NotifySocket(path)
    yield server, path
    server.sock.close()


def test_ready_watchdog_and_stopping_arrive_as_datagrams(listener) -> None:
    server, path = listener
    systemd = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})

    systemd.ready("consuming metrics")
    assert server.next() == "READY=1\nSTATUS=consuming metrics"
    systemd.alive(now=100.0)
    assert server.next() == "WATCHDOG=1"
    systemd.stopping()
    assert server.next() == "STOPPING=1"


def test_watchdog_pings_are_rate_limited_to_a_third_of_watchdog_sec(listener) -> None:
    server, path = listener
    systemd = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    systemd.ready()
    server.next()

    for now in (0.0, 1.0, 5.0, 9.9, 10.0, 15.0, 20.0, 29.9, 30.0):  # a loop turning fast
        systemd.alive(now)
    assert server.messages() == ["WATCHDOG=1"] * 4  # at 0, 10, 20 and 30 s


def test_before_ready_the_loop_extends_the_start_timeout_instead(listener) -> None:
    server, path = listener
    systemd = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})

    systemd.alive(now=0.0)
    assert server.next() == "EXTEND_TIMEOUT_USEC=30000000"  # three ping intervals of 10 s
    systemd.ready()
    systemd.alive(now=10.0)
    assert server.messages() == ["READY=1", "WATCHDOG=1"]


def test_ready_is_sent_once(listener) -> None:
    server, path = listener
    systemd = SystemdNotifier(path)
    systemd.ready()
    systemd.ready()
    assert server.messages() == ["READY=1"]


def test_abstract_namespace_socket_is_reached_by_its_at_name() -> None:
    name = f"sentinel-test-{os.getpid()}"
    server = NotifySocket(b"\0" + name.encode())
    try:
        SystemdNotifier.from_environment({"NOTIFY_SOCKET": f"@{name}"}).ready()
        assert server.next() == "READY=1"
    finally:
        server.sock.close()


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    systemd = SystemdNotifier.from_environment({})
    assert not systemd.enabled
    systemd.ready()
    systemd.alive(now=0.0)
    systemd.stopping()
    assert systemd.notify("READY=1") is False


@pytest.mark.parametrize(("environ", "watchdog_seconds"), [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),  # ours
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_the_watchdog_interval_comes_from_watchdog_usec_when_it_is_meant_for_us(
        environ: dict[str, str], watchdog_seconds: float | None) -> None:
    systemd = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "/nonexistent", **environ},
                                               pid=4242)
    assert systemd.watchdog_seconds == watchdog_seconds


def test_a_socket_that_is_gone_is_reported_not_raised(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    systemd = SystemdNotifier(str(tmp_path / "gone.sock"), watchdog_seconds=30.0)
    assert systemd.notify("READY=1") is False
    assert systemd.notify("WATCHDOG=1") is False
    assert sum("cannot notify systemd" in r.message for r in caplog.records) == 1
