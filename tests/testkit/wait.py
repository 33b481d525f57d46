"""One `wait_until` for tests that wait on another thread or process (never to pass time:
time passes with `FakeClock.advance`)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout_seconds: float = 5.0,
               what: Callable[[], str] | str = "the condition", every_seconds: float = 0.05):
    """The condition's first truthy value; AssertionError naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds}s waiting for "
                                 f"{what() if callable(what) else what}")
        time.sleep(every_seconds)
