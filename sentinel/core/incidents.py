"""What people know about failures, as labels: recorded incidents and operator feedback.

    >>> covered_steps(np.array([0, 10, 20, 30]), 10, [(12.0, 25.0)])
    array([False,  True,  True, False])

An *incident* is a failure someone recorded (an incident report, a page that was real): the
service failed over [start_ts, end_ts), whatever its metrics said. `training.labels` decides
whether these, the config's failure rule, or both make the failure events training learns
from (sentinel.training.history.label).

*Feedback* is an on-call engineer's verdict on one alert episode, named by its key
``<service>@<startsAt>`` (the `service` label and `startsAt` of the alert payload; also the
`episode` annotation). The windows around a false alarm become hard negatives, those just
before a confirmed alert positives, in the next training (`feedback_span`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from sentinel.core.samples import parse_ts, service_problem
from sentinel.errors import DataError

LabelMode = Literal["rule", "incidents", "both"]
Verdict = Literal["false_alarm", "confirmed"]
VERDICTS: tuple[Verdict, ...] = ("false_alarm", "confirmed")


@dataclass(frozen=True, slots=True)
class Incident:
    service: str
    start_ts: float
    end_ts: float  # exclusive: the time the service was healthy again
    cause: str = ""


@dataclass(frozen=True, slots=True)
class Feedback:
    service: str
    started_ts: int  # event time of the firing that opened the episode (startsAt)
    verdict: Verdict
    note: str = ""

    @property
    def episode(self) -> str:
        return episode_key(self.service, self.started_ts)


@dataclass(frozen=True)
class LabelSources:
    """Where the failure events of training come from, besides (or instead of) the rule."""

    mode: LabelMode = "rule"
    incidents: tuple[Incident, ...] = ()
    # the incident record is complete from here on (earlier history is unlabelled in mode
    # "incidents"); None: from the first step of each series
    incidents_from_ts: float | None = None
    feedback: tuple[Feedback, ...] = ()


def episode_key(service: str, started_ts: int) -> str:
    """``<service>@<startsAt>``: what an alert payload carries (label `service`, `startsAt`)."""
    return f"{service}@{datetime.fromtimestamp(started_ts, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def parse_episode_key(key: str) -> tuple[str, int]:
    """(service, started_ts) of ``<service>@<startsAt>``; startsAt as RFC 3339 or Unix seconds.

    >>> parse_episode_key("checkout@2025-11-23T12:00:00Z")
    ('checkout', 1763899200)
    """
    service, at, when = key.rpartition("@")
    if not at:
        raise DataError(f"episode {key!r}: expected <service>@<startsAt>, e.g. "
                        "checkout@2025-11-23T12:00:00Z (the alert's service label and startsAt)")
    problem = service_problem(service)
    if problem:
        raise DataError(f"episode {key!r}: {problem}")
    number = _number(when)
    ts = parse_ts(number if number is not None else when)
    if ts is None:
        raise DataError(f"episode {key!r}: startsAt {when!r} is neither RFC 3339 with a time "
                        "zone nor Unix seconds")
    return service, int(ts)


def covered_steps(ts: np.ndarray, step_seconds: int, spans: Iterable[tuple[float, float]]
                  ) -> np.ndarray:
    """Per step (each step's start ts): whether [t, t + step) overlaps a span [start, end);
    a span with end <= start covers the step holding its start."""
    out = np.zeros(len(ts), dtype=bool)
    for start, end in spans:
        end = max(end, start + 1e-9)
        out |= (ts < end) & (ts + step_seconds > start)
    return out


def feedback_span(feedback: Feedback, horizon_seconds: int) -> tuple[int, int]:
    """[first, last] ts of the windows (by their last step) a verdict relabels.

    A false alarm: the windows from one horizon before the firing to one horizon after it
    (what made the risk rise and what kept it up) become negatives. Confirmed: the windows
    in the half horizon up to the firing become positives, as if a failure had followed."""
    if feedback.verdict == "false_alarm":
        return feedback.started_ts - horizon_seconds, feedback.started_ts + horizon_seconds
    return feedback.started_ts - horizon_seconds // 2, feedback.started_ts


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
