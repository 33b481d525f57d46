"""Webhook sink: one Alertmanager-webhook-format (version "4") POST per alert transition.

    >>> sink = WebhookSink(0, WebhookConfig("http://127.0.0.1:9000/alerts"), "critical")
    >>> request = sink.request(delivery, now_ts=time.time())
    >>> request.headers["Idempotency-Key"]     # <episode key>-<state>, stable across retries
    'e94400dfca9f7940-firing'

Receivers built for Alertmanager (chat bots, PagerDuty bridges, DingTalk/WeCom adapters)
read these bodies unchanged. The body is rendered from the delivery alone, so every retry,
before or after a restart, sends the same bytes with the same Idempotency-Key, and a receiver
can drop the duplicates that at-least-once delivery produces. With a secret configured, the
body is signed: `X-Sentinel-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Collection

from sentinel.config.schema import WebhookConfig
from sentinel.config.secrets import env_name
from sentinel.core.alerts import AlertTransition
from sentinel.errors import ConfigError
from sentinel.sinks.base import (
    ALERTNAME,
    ZERO_TIME,
    Request,
    alert_annotations,
    alert_labels,
    basic_authorization,
    encode,
    rfc3339,
    sink_tls_context,
)
from sentinel.sinks.outbox import Delivery


class WebhookSink:
    resend_interval_seconds = None  # a webhook hears about each transition once

    def __init__(self, index: int, config: WebhookConfig, severity: str,
                 external_url: str = "") -> None:
        """Reads the signing secret, the password and the CA now, so a missing one stops
        start-up (ConfigError)."""
        key = f"alerting.webhooks[{index}]"
        self.name = f"webhook{index}"
        self.url = config.url
        self.timeout_seconds = config.timeout_seconds
        self.severity = severity
        self.external_url = external_url
        self._secret = load_secret(config, key)
        self._authorization = basic_authorization(config.basic_auth, key)
        self.tls_context = sink_tls_context(config.url, config.ca_file, key)

    def record(self, transition: AlertTransition) -> None:
        pass

    def refresh(self, transitions: list[AlertTransition]) -> None:
        pass  # a webhook hears about each transition once

    def forget(self, services: Collection[str]) -> None:
        pass

    def request(self, delivery: Delivery, now_ts: float) -> Request:
        transition = delivery.transition
        body = encode(webhook_body(transition, self.severity, self.external_url))
        headers = {**webhook_headers(transition, body, self._secret), **self._authorization}
        return Request(self.url, body, headers)

    def resend(self, now_ts: float) -> Request | None:
        return None

    def __repr__(self) -> str:  # never the secret
        return f"WebhookSink({self.name}, signed={self._secret is not None})"


def webhook_body(transition: AlertTransition, severity: str, external_url: str = ""
                 ) -> dict[str, object]:
    """The Alertmanager webhook payload (version 4) of one transition, one alert long."""
    labels = alert_labels(transition.service, severity, transition.phase)
    annotations = alert_annotations(transition)
    firing = transition.state == "firing"
    alert = {
        "status": transition.state,
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(transition.started_ts),
        "endsAt": ZERO_TIME if firing else rfc3339(transition.ts),
        "generatorURL": external_url,
        "fingerprint": transition.episode_key,
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{ALERTNAME}", service="{transition.service}"}}',
        "truncatedAlerts": 0,
        "status": transition.state,
        "receiver": "sentinel",
        "groupLabels": {"alertname": ALERTNAME, "service": transition.service},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [alert],
    }


def webhook_headers(transition: AlertTransition, body: bytes, secret: bytes | None
                    ) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": f"{transition.episode_key}-{transition.state}",
        "X-Sentinel-Episode": transition.episode_key,
    }
    if secret is not None:
        headers["X-Sentinel-Signature"] = sign(body, secret)
    return headers


def sign(body: bytes, secret: bytes) -> str:
    """What a receiver recomputes and compares with `hmac.compare_digest`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def load_secret(config: WebhookConfig, key: str) -> bytes | None:
    """The signing secret from `secret_file` or `secret_env`, surrounding whitespace removed."""
    if config.secret_file is not None:
        try:
            with open(config.secret_file, "rb") as stream:
                secret = stream.read().strip()
        except OSError as exc:
            raise ConfigError(f"{key}.secret_file", config.secret_file,
                              f"a readable file holding the signing secret ({exc})") from exc
        if not secret:
            raise ConfigError(f"{key}.secret_file", config.secret_file,
                              "a file holding a non-empty signing secret, not an empty one")
        return secret
    if config.secret_env is not None:
        secret = os.environ.get(env_name(config.secret_env, f"{key}.secret_env"), "").strip().encode()
        if not secret:
            raise ConfigError(f"{key}.secret_env", config.secret_env,
                              "the name of a set, non-empty environment variable holding the "
                              "signing secret")
        return secret
    return None
