"""systemd's notify protocol (sd_notify(3)) in the standard library: start-up, watchdog, stop.

    >>> systemd = SystemdNotifier.from_environment()   # a no-op outside a Type=notify unit
    >>> systemd.ready("consuming sentinel.metrics")    # READY=1 + STATUS=...
    >>> systemd.alive(now=time.monotonic())            # each loop turn; sends WATCHDOG=1 at most
    ...                                                # every WatchdogSec / 3
    >>> systemd.stopping()                             # STOPPING=1

systemd passes `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) and, with
`WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`) in the environment. Each message is
one AF_UNIX datagram of `KEY=value` lines. Without `NOTIFY_SOCKET` (a terminal, Kubernetes,
tests) every call does nothing. Sending never raises: a lost notification must not stop the
daemon, and systemd acts on the missing one by itself (start timeout, watchdog restart).

Before READY, `alive()` sends `EXTEND_TIMEOUT_USEC` instead of `WATCHDOG=1`: systemd only
arms the watchdog once start-up is complete, and a daemon that keeps turning while it waits
for its partitions (or a model) is not hung, so the start timeout is pushed back for as long
as the loop turns — and no longer.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

WATCHDOG_PINGS_PER_INTERVAL = 3  # a ping every WatchdogSec / 3 survives two late loop turns
START_EXTENSION_INTERVALS = 3  # each EXTEND_TIMEOUT_USEC covers this many ping intervals
DEFAULT_PING_SECONDS = 10.0  # without a watchdog, how often start-up extensions are sent


class SystemdNotifier:
    """Sends sd_notify messages to `socket_address`; None makes every call a no-op."""

    def __init__(self, socket_address: str | None, watchdog_seconds: float | None = None) -> None:
        """`socket_address` as in NOTIFY_SOCKET; `watchdog_seconds` as WATCHDOG_USEC / 1e6."""
        self.address = _socket_address(socket_address) if socket_address else None
        self.watchdog_seconds = watchdog_seconds
        self.ping_every_seconds = (watchdog_seconds / WATCHDOG_PINGS_PER_INTERVAL
                                   if watchdog_seconds else DEFAULT_PING_SECONDS)
        self.is_ready = False
        self._last_ping: float | None = None
        self._failure_logged = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None,
                         pid: int | None = None) -> SystemdNotifier:
        """From NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID; the watchdog only when it is ours."""
        env = os.environ if environ is None else environ
        watchdog_seconds = None
        usec, watchdog_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (
                not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid)):
            watchdog_seconds = int(usec) / 1e6
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_seconds)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str = "") -> None:
        """READY=1: start-up is complete (systemd then arms the watchdog); sent once."""
        if self.is_ready:
            return
        self.is_ready = True
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        """STATUS=...: one line shown by `systemctl status`."""
        self.notify(f"STATUS={text}")

    def alive(self, now: float) -> None:
        """The loop made progress at monotonic time `now`; rate-limited to one message per
        `ping_every_seconds`: WATCHDOG=1 once ready, EXTEND_TIMEOUT_USEC before."""
        if not self.enabled or (self._last_ping is not None
                                and now - self._last_ping < self.ping_every_seconds):
            return
        self._last_ping = now
        if self.is_ready:
            if self.watchdog_seconds:
                self.notify("WATCHDOG=1")
        else:
            extend_usec = round(START_EXTENSION_INTERVALS * self.ping_every_seconds * 1e6)
            self.notify(f"EXTEND_TIMEOUT_USEC={extend_usec}")

    def stopping(self, status: str = "") -> None:
        """STOPPING=1: shutdown began (the watchdog stays armed until the process exits)."""
        self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def notify(self, *fields: str) -> bool:
        """Send one datagram of `fields` (KEY=value); False when it could not be sent."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message)
        except OSError as exc:
            if not self._failure_logged:  # once: a broken socket would log every loop turn
                log.warning("cannot notify systemd at %r: %s", self.address, exc)
                self._failure_logged = True
            return False
        return True


def _socket_address(value: str) -> str | bytes:
    """NOTIFY_SOCKET as socket.connect takes it: '@name' is the abstract name '\\0name'."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value
