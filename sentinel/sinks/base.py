"""What every alert sink shares: the interface the Notifier drives, and the wire vocabulary.

    >>> rfc3339(1763899200)
    '2025-11-23T12:00:00Z'
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from sentinel.config.schema import BasicAuthConfig
from sentinel.config.secrets import read_secret
from sentinel.core.alerts import AlertTransition
from sentinel.core.incidents import episode_key
from sentinel.sinks.outbox import Delivery
from sentinel.tls import client_context

ALERTNAME = "SentinelFailureRisk"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert that has not ended


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP POST, built by a sink and sent by the Notifier's transport."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(repr=False)  # may carry an Authorization header


class Sink(Protocol):
    """One alert destination. The Notifier gives each sink its own worker thread.

    `name` is the bounded `sink` label of the delivery metrics (webhook0, ..., alertmanager).
    """

    name: str
    url: str  # where every request of this sink goes
    tls_context: ssl.SSLContext | None  # verifies an https:// url (None: the system CAs)
    timeout_seconds: float
    resend_interval_seconds: float | None  # `resend` is called this often; None: never

    def record(self, transition: AlertTransition) -> None:
        """Called on the submitting thread just before the transition's delivery is queued.

        Also called, without a delivery, for transitions replayed while the daemon rebuilds
        a partition's state (`Notifier.adopt`). May write to disk and block for that long;
        raises OutboxError when it cannot.
        """

    def refresh(self, transitions: list[AlertTransition]) -> None:
        """Called on the submitting thread with firing episodes whose drivers were recomputed
        (same episode keys as their firings): what a re-send says from now on. Same blocking
        and errors as `record`; a no-op for a sink that does not re-send."""

    def forget(self, services: Collection[str]) -> None:
        """Called on the submitting thread when this replica stops tracking `services`
        (their partition moved to another replica, or they were evicted): drop any state
        kept for them. Same blocking and errors as `record`."""

    def request(self, delivery: Delivery, now_ts: float) -> Request:
        """Called on the sink's worker thread before every attempt; `now_ts` is wall-clock time.

        Must not block or raise: it only renders what the delivery holds.
        """

    def resend(self, now_ts: float) -> Request | None:
        """Called on the sink's worker thread every resend interval; None: nothing to send."""


def rfc3339(ts: float) -> str:
    """UTC, with milliseconds only when `ts` has a fraction."""
    spec = "seconds" if float(ts).is_integer() else "milliseconds"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def encode(document: object) -> bytes:
    """Compact, deterministic JSON: a retry sends (and signs) the same bytes."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def alert_labels(service: str, severity: str, phase: str = "predicted") -> dict[str, str]:
    """`phase`: "predicted" (the risk crossed the threshold before any failure) or "failing"
    (the failure rule fired and nobody had predicted it); an episode keeps its phase."""
    return {"alertname": ALERTNAME, "service": service, "severity": severity, "phase": phase}


def alert_annotations(transition: AlertTransition) -> dict[str, str]:
    """`summary` and `description` in words, `risk`, `episode` (the key `sentinel feedback
    --episode` and POST /feedback take), and with drivers (a firing's metrics behind the
    risk) `drivers`: a JSON list of {metric, contribution, z, away_seconds, trend, text} as a
    string, since Alertmanager's annotations are strings."""
    service, risk, at = transition.service, transition.risk, rfc3339(transition.ts)
    if transition.state == "firing" and transition.phase == "failing":
        summary = f"{service} is failing (its failure rule holds; failure risk {risk:.2f})"
        description = (f"{service} met its failure rule at {at} (event time) without a prior "
                       f"warning from Sentinel: risk {risk:.3f}.")
    elif transition.state == "firing" and transition.cause_service is not None:
        cause = transition.cause_service
        summary = (f"{service} is likely to fail soon, driven by its dependency {cause} "
                   f"(failure risk {risk:.2f})")
        description = (f"Sentinel's predicted failure risk for {service} crossed the alert "
                       f"threshold at {at} (event time): risk {risk:.3f}. Without its "
                       f"dependencies' steps it would not have fired; {cause} drove it most.")
    elif transition.state == "firing":
        summary = f"{service} is likely to fail soon (failure risk {risk:.2f})"
        description = (f"Sentinel's predicted failure risk for {service} at {at} (event time) "
                       f"is above the alert threshold: risk {risk:.3f}.")
    else:
        summary = f"{service} is no longer at risk (failure risk {risk:.2f})"
        description = (f"Sentinel's predicted failure risk for {service} fell below the "
                       f"resolve threshold at {at} (event time): risk {risk:.3f}.")
    annotations = {"summary": summary, "description": description, "risk": f"{risk:.4f}",
                   "episode": episode_key(service, transition.started_ts)}
    if transition.planned_event:  # the sale calendar had announced this
        annotations["planned_event"] = transition.planned_event
        description += f" A planned event is in progress: {transition.planned_event}."
        annotations["description"] = description
    if transition.cause_service is not None:
        annotations["cause_service"] = transition.cause_service
    if transition.drivers:
        top = transition.drivers[0]
        annotations["summary"] = f"{summary}; mostly {top.text}"
        lines = "\n".join(f"- {d.text} (carries {d.contribution:.2g} of the risk)"
                          for d in transition.drivers)
        annotations["description"] = (f"{description}\nWhat drives it (the risk that goes when "
                                      f"the metric is set to its normal):\n{lines}")
        annotations["drivers"] = json.dumps([d.to_json() for d in transition.drivers],
                                            separators=(",", ":"))
    return annotations


def basic_authorization(config: BasicAuthConfig | None, key: str) -> dict[str, str]:
    """The Authorization header for `config` (read now: ConfigError at start-up), or none."""
    if config is None:
        return {}
    password = read_secret(config.password, f"{key}.basic_auth").reveal()
    token = base64.b64encode(f"{config.username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def sink_tls_context(url: str, ca_file: str | None, key: str) -> ssl.SSLContext | None:
    """A verifying context trusting `ca_file`, for an https:// url; None means the system CAs."""
    if ca_file is None or not url.startswith("https://"):
        return None
    return client_context(key, ca_file)
