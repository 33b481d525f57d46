"""`sentinel run` with every kind of secret set: none of them shows up in its logs (debug level,
kafka-python's included), its error messages, /metrics, /readyz or a config dump."""

from __future__ import annotations

import base64
import json
import signal
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from sentinel import cli
from sentinel.config.load import parse_config
from tests.testkit.broker import free_port
from tests.testkit.daemon import BASE_CONFIG, DaemonProcess
from tests.testkit.http import Receiver
from tests.testkit.security import Pki
from tests.testkit.wait import wait_until

SECRETS = {  # one distinct value per kind of secret, so a leak says which one leaked
    "kafka": "kafka-sasl-Vx93",
    "hmac": "webhook-hmac-Qp27",
    "hook": "webhook-basic-Lm45",
    "am": "alertmanager-Hd61",
    "metrics": "metrics-basic-Rw18",
}


def _get(url: str, context: ssl.SSLContext, password: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"prom:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_no_secret_appears_in_logs_errors_metrics_or_dumps(
        tmp_path: Path, kafka_broker, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    pki = Pki.create(tmp_path)
    files = {}
    for name in ("kafka", "hook", "metrics"):
        files[name] = tmp_path / f"{name}.secret"
        files[name].write_text(SECRETS[name] + "\n")
    monkeypatch.setenv("SENTINEL_TEST_HMAC", SECRETS["hmac"])
    monkeypatch.setenv("SENTINEL_TEST_AM_PW", SECRETS["am"])
    webhook, alertmanager = Receiver().start(), Receiver().start()

    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["model"] = {"path": str(tmp_path / "no-model")}
    raw["state"] = {"dir": str(tmp_path / "state")}
    raw["metrics"] = {"listen": f"127.0.0.1:{free_port()}",
                      "tls": {"cert_file": str(pki.cert_file), "key_file": str(pki.key_file)},
                      "basic_auth": {"username": "prom", "password_file": str(files["metrics"])}}
    # SASL against a broker that does not complete it: the consumer keeps failing, and every
    # failure is logged; those messages must not carry the password
    raw["kafka"] = {"bootstrap_servers": kafka_broker.bootstrap, "topic": "metrics",
                    "poll_timeout": "0.2s", "session_timeout": "2s",
                    "security_protocol": "SASL_PLAINTEXT",
                    "sasl": {"mechanism": "PLAIN", "username": "sentinel",
                             "password_file": str(files["kafka"])}}
    raw["alerting"]["webhooks"] = [{
        "url": webhook.url(), "secret_env": "SENTINEL_TEST_HMAC",
        "basic_auth": {"username": "bot", "password_file": str(files["hook"])}}]
    raw["alerting"]["alertmanager"] = {
        "url": f"http://127.0.0.1:{alertmanager.port}", "resend_interval": "1s",
        "basic_auth": {"username": "am", "password_env": "SENTINEL_TEST_AM_PW"}}
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = parse_config(raw, str(path))

    daemon = DaemonProcess(path, config, tmp_path / "sentinel.log").start()
    try:
        base = f"https://127.0.0.1:{config.metrics.port}"
        context = pki.client_context()

        def healthy() -> bool:
            daemon.check_alive()
            try:
                return _get(f"{base}/healthz", context, None)[0] == 200
            except OSError:  # not listening yet
                return False

        wait_until(healthy, 60, lambda: f"/healthz; log:\n{daemon.log_tail()}", 0.2)
        # the secrets are in use: Alertmanager got the watchdog with the right credentials ...
        wait_until(lambda: alertmanager.received, 20, lambda: "a watchdog push", 0.1)
        token = alertmanager.received[0].headers["Authorization"].split()[1]
        assert base64.b64decode(token).decode() == f"am:{SECRETS['am']}"
        # ... /metrics wants its password ...
        assert _get(f"{base}/metrics", context, None)[0] == 401
        status, metrics = _get(f"{base}/metrics", context, SECRETS["metrics"])
        assert status == 200 and "sentinel_samples_total" in metrics
        # ... and the consumer tried SASL and failed (logged while the broker is "unreachable")
        wait_until(lambda: "Kafka" in daemon.log_tail(200) or "broker" in daemon.log_tail(200),
                   30, lambda: f"a broker problem in the log:\n{daemon.log_tail()}", 0.2)
        readyz = _get(f"{base}/readyz", context, None)[1]
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.wait(30)
        webhook.stop()
        alertmanager.stop()

    assert cli.main(["check-config", str(path), "--dump"]) == 0
    dump = capsys.readouterr().out
    log = daemon.log_path.read_text()
    assert json.loads(log.splitlines()[0])  # JSON lines, as in production
    shown = {"log": log, "/metrics": metrics, "/readyz": readyz, "dump": dump,
             "repr(config)": repr(config)}
    leaks = [f"{kind} secret in {where}" for kind, secret in SECRETS.items()
             for where, text in shown.items() if secret in text]
    assert leaks == []
