"""Alertmanager sink: push alerts to Alertmanager's v2 API and keep the firing ones alive.

    >>> sink = AlertmanagerSink(AlertmanagerConfig("http://127.0.0.1:9093"), "critical",
    ...                         outbox, started_ts=time.time())
    >>> sink.resend(now_ts=time.time()).url
    'http://127.0.0.1:9093/api/v2/alerts'

Alertmanager resolves an alert by itself once its endsAt passes, so while an episode fires it
is re-sent every `resend_interval` with endsAt = now + 4 x resend_interval: three lost
resends are tolerated, and the alerts of a Sentinel that died resolve within four intervals
instead of firing forever. A resolve is sent with endsAt = the resolve's event time.

The firing episodes are kept in `alertmanager-firing.json` beside the outbox (written
atomically) so that resends go on after a restart. With `watchdog`, a `SentinelWatchdog`
alert (severity none) rides along on every resend: routed to a dead man's switch, its silence
says Sentinel is down.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection
from pathlib import Path

from sentinel.config.schema import AlertmanagerConfig
from sentinel.core.alerts import AlertTransition
from sentinel.sinks.base import (
    Request,
    alert_annotations,
    alert_labels,
    basic_authorization,
    encode,
    rfc3339,
    sink_tls_context,
)
from sentinel.sinks.outbox import (
    Delivery,
    Outbox,
    OutboxError,
    transition_from_json,
    transition_to_json,
    write_atomic,
)

FIRING_FILE = "alertmanager-firing.json"
WATCHDOG = "SentinelWatchdog"
LIFETIME_INTERVALS = 4  # endsAt of a firing alert = now + this many resend intervals


class AlertmanagerSink:
    name = "alertmanager"

    def __init__(self, config: AlertmanagerConfig, severity: str, outbox: Outbox,
                 started_ts: float, external_url: str = "") -> None:
        """Re-loads the firing episodes; a corrupt file is moved aside by `outbox`. Reads the
        password and the CA now (ConfigError)."""
        self.url = config.url.rstrip("/") + "/api/v2/alerts"
        self._authorization = basic_authorization(config.basic_auth, "alerting.alertmanager")
        self.tls_context = sink_tls_context(config.url, config.ca_file, "alerting.alertmanager")
        self.timeout_seconds = config.timeout_seconds
        self.resend_interval_seconds: float | None = config.resend_interval_seconds
        self.watchdog = config.watchdog
        self.severity = severity
        self.external_url = external_url
        self.started_ts = started_ts  # the watchdog's startsAt
        self._path = outbox.directory / FIRING_FILE
        self._lock = threading.Lock()
        self._firing = _load_firing(self._path, outbox)

    def record(self, transition: AlertTransition) -> None:
        """Adds or removes the episode from the persisted firing set (before it is queued)."""
        with self._lock:
            firing = dict(self._firing)
            if transition.state == "firing":
                firing[transition.episode_key] = transition
            else:
                firing.pop(transition.episode_key, None)
            self._save(firing)

    def refresh(self, transitions: list[AlertTransition]) -> None:
        """Re-sends carry these newer drivers (and risk) of episodes still firing; one write."""
        with self._lock:
            firing = dict(self._firing)
            for transition in transitions:
                if transition.episode_key in firing:
                    firing[transition.episode_key] = transition
            self._save(firing)

    def forget(self, services: Collection[str]) -> None:
        """Stops re-sending the episodes of `services`: another replica owns them now (it
        adopts them while rebuilding), or they were evicted."""
        with self._lock:
            self._save({k: t for k, t in self._firing.items() if t.service not in services})

    def _save(self, firing: dict[str, AlertTransition]) -> None:
        if firing == self._firing:
            return
        document = {"firing": [transition_to_json(t) for t in firing.values()]}
        self._firing = firing  # re-sent from memory even when the disk refuses the file
        try:
            write_atomic(self._path, encode(document))
        except OSError as exc:
            raise OutboxError(f"cannot write {self._path}: {exc}; check that state.dir "
                              f"is writable and has space") from exc

    def firing(self) -> list[AlertTransition]:
        with self._lock:
            return list(self._firing.values())

    def request(self, delivery: Delivery, now_ts: float) -> Request:
        transition = delivery.transition
        if transition.state == "firing":
            ends_ts = now_ts + LIFETIME_INTERVALS * (self.resend_interval_seconds or 0)
        else:
            ends_ts = transition.ts
        return self._post([self._alert(transition, ends_ts)])

    def resend(self, now_ts: float) -> Request | None:
        ends_ts = now_ts + LIFETIME_INTERVALS * (self.resend_interval_seconds or 0)
        alerts = [self._alert(transition, ends_ts) for transition in self.firing()]
        if self.watchdog:
            summary = "Sentinel is running: this alert fires for as long as it does"
            description = ("A dead man's switch: route it to a receiver that pages when it "
                           "stops arriving, which means Sentinel is down or cannot reach "
                           "Alertmanager.")
            alerts.append({"labels": {"alertname": WATCHDOG, "severity": "none"},
                           "annotations": {"summary": summary, "description": description},
                           "startsAt": rfc3339(self.started_ts), "endsAt": rfc3339(ends_ts),
                           "generatorURL": self.external_url})
        return self._post(alerts) if alerts else None

    def _alert(self, transition: AlertTransition, ends_ts: float) -> dict[str, object]:
        return {"labels": alert_labels(transition.service, self.severity, transition.phase),
                "annotations": alert_annotations(transition),
                "startsAt": rfc3339(transition.started_ts), "endsAt": rfc3339(ends_ts),
                "generatorURL": self.external_url}

    def _post(self, alerts: list[dict[str, object]]) -> Request:
        return Request(self.url, encode(alerts),
                       {"Content-Type": "application/json", **self._authorization})


def _load_firing(path: Path, outbox: Outbox) -> dict[str, AlertTransition]:
    try:
        raw = json.loads(path.read_bytes())
        transitions = [transition_from_json(item) for item in raw["firing"]]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        outbox.quarantine(path, repr(exc))
        return {}
    return {t.episode_key: t for t in transitions}
