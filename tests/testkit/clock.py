"""One fake clock: tests move time by hand and never sleep to make it pass.

    >>> clock = FakeClock()
    >>> daemon = Loop(..., clock=clock)        # a `() -> float` clock
    >>> clock.advance(61)                      # a minute and a second later

Also a pair of clocks for worker threads (`monotonic`, `time`) and a `wait(event, timeout)`
that advances time by the timeout instead of sleeping when nobody sets the event.
"""

from __future__ import annotations

import threading


class FakeClock:
    def __init__(self, now: float = 1000.0, wall_offset: float = 0.0) -> None:
        self.now = now  # monotonic seconds
        self.wall_offset = wall_offset  # time() = wall_offset + now
        self.waits: list[float | None] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall_offset + self.now

    def wait(self, event: threading.Event, timeout_seconds: float | None) -> None:
        self.waits.append(timeout_seconds)
        if not event.wait(0.002) and timeout_seconds is not None:  # woken: no time passes
            self.now += timeout_seconds
