"""Calendar channels: what the sale calendar says about each step of a window.

    >>> provider = CalendarProvider([SaleEvent("double-11", t0, t0 + 7200, None, 8.0)])
    >>> provider.build(batch).shape        # (windows, window_steps, len(CALENDAR_CHANNELS))

A context provider (sentinel.core.context) named "calendar". Per step t of a service's
window, from the planned events that apply to the service (`SaleEvent.applies_to`):

- ``calendar_until_start``: how close the next planned start is, ``1 - dt / LOOKAHEAD``
  for a start dt seconds ahead (0 when none within LOOKAHEAD_SECONDS);
- ``calendar_since_start``: the same for the latest start at or before t (a sale's first
  hour is when capacity tips over);
- ``calendar_multiplier``: log2 of the planned traffic multiplier of the event in progress
  (the largest if several), else of the next one within LOOKAHEAD_SECONDS, clipped to
  [-4, 4]; 0 when nothing is planned;
- ``calendar_in_event``: 1 inside a planned event, else 0.

All are bounded and 0 means "nothing planned": the neutral value of every context channel, so
a model trained with a calendar and served without one sees a quiet calendar, never a crash.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentinel.config.schema import SaleEvent
from sentinel.core.context import ContextBatch

CALENDAR_CHANNELS = ("calendar_until_start", "calendar_since_start", "calendar_multiplier",
                     "calendar_in_event")
LOOKAHEAD_SECONDS = 3600.0
MAX_LOG2_MULTIPLIER = 4.0


def calendar_channels(services: Sequence[str], step_ts: np.ndarray,
                      events: Sequence[SaleEvent]) -> np.ndarray:
    """(n, steps, 4) float32 for the windows of `services` with step times `step_ts` (n, steps)."""
    out = np.zeros((*step_ts.shape, len(CALENDAR_CHANNELS)), np.float32)
    if not len(services) or not events:
        return out
    names = np.asarray(services, dtype=object)
    low, high = float(step_ts.min()) - LOOKAHEAD_SECONDS, float(step_ts.max()) + LOOKAHEAD_SECONDS
    near = [e for e in events if e.end_ts >= low and e.start_ts <= high]
    for service in dict.fromkeys(services):
        mine = sorted((e for e in near if e.applies_to(service)), key=lambda e: e.start_ts)
        if not mine:
            continue
        rows = np.flatnonzero(names == service)
        out[rows] = _channels(step_ts[rows].astype(np.float64), mine)
    return out


def _channels(t: np.ndarray, events: list[SaleEvent]) -> np.ndarray:
    starts = np.array([e.start_ts for e in events])
    log_multipliers = np.clip(np.log2([e.multiplier for e in events]), -MAX_LOG2_MULTIPLIER,
                              MAX_LOG2_MULTIPLIER)
    upcoming = np.searchsorted(starts, t, side="right")  # first start after t
    ahead = np.where(upcoming < len(starts), starts[np.minimum(upcoming, len(starts) - 1)] - t,
                     np.inf)
    behind = np.where(upcoming > 0, t - starts[np.maximum(upcoming - 1, 0)], np.inf)
    in_event = np.zeros(t.shape, bool)
    multiplier = np.where(ahead < LOOKAHEAD_SECONDS,
                          log_multipliers[np.minimum(upcoming, len(starts) - 1)], 0.0)
    running = np.full(t.shape, -np.inf)
    for event, log_m in zip(events, log_multipliers, strict=True):
        inside = (t >= event.start_ts) & (t < event.end_ts)
        in_event |= inside
        running = np.where(inside, np.maximum(running, log_m), running)
    multiplier = np.where(in_event, running, multiplier)
    return np.stack([np.clip(1 - ahead / LOOKAHEAD_SECONDS, 0, 1),
                     np.clip(1 - behind / LOOKAHEAD_SECONDS, 0, 1), multiplier,
                     in_event.astype(np.float64)], axis=-1)


def event_at(events: Sequence[SaleEvent], service: str, ts: float) -> SaleEvent | None:
    """The planned event in progress for `service` at `ts` (the latest started), or None."""
    found = [e for e in events if e.applies_to(service) and e.start_ts <= ts < e.end_ts]
    return max(found, key=lambda e: e.start_ts) if found else None


class CalendarProvider:
    """The calendar channels of a fixed list of events (training, backtests); the daemon's
    live calendar (sentinel.daemon.calendar_source) re-reads its sources instead."""

    name = "calendar"

    def __init__(self, events: Sequence[SaleEvent]) -> None:
        self.events = tuple(events)

    def channels(self) -> tuple[str, ...]:
        return CALENDAR_CHANNELS

    def build(self, batch: ContextBatch) -> np.ndarray:
        return calendar_channels(batch.services, batch.step_ts(), self.events)

    def event_at(self, service: str, ts: float) -> SaleEvent | None:
        return event_at(self.events, service, ts)
