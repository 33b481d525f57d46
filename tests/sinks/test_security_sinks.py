"""Security: secrets never shown, TLS and basic auth on the metrics listener, verified HTTPS
and no redirects for alert sinks. Real servers on loopback, a throwaway CA (trustme)."""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter

from sentinel import cli
from sentinel.config.load import dump_config, load_config, parse_config
from sentinel.config.schema import (
    AlertingConfig,
    AlertmanagerConfig,
    BasicAuthConfig,
    DeliveryConfig,
    MetricsAuthConfig,
    MetricsConfig,
    ServerTlsConfig,
    WebhookConfig,
)
from sentinel.config.secrets import Secret, SecretSource, mask_url, read_secret
from sentinel.core.alerts import AlertTransition
from sentinel.daemon.health import HealthServer, HealthState
from sentinel.errors import ConfigError
from sentinel.sinks import Notifier
from tests.testkit.http import Receiver, Reply
from tests.testkit.security import Pki

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "sentinel.yaml"
PASSWORD = "pw-Zq8#metrics-listener"
T0 = 1763899200
FIRING = AlertTransition("checkout", "firing", T0, 0.91, T0)
FAST = DeliveryConfig(initial_backoff_seconds=0.05, max_backoff_seconds=0.1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def _secret_file(tmp_path: Path, value: str, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


# --- secrets ---------------------------------------------------------------------------------

def test_secret_is_read_from_a_file_or_the_environment_and_never_shown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_TEST_PW", f"  {PASSWORD} ")
    from_file = read_secret(SecretSource(file=_secret_file(tmp_path, PASSWORD)), "k")
    from_env = read_secret(SecretSource(env="SENTINEL_TEST_PW"), "k")

    assert from_file.reveal() == from_env.reveal() == PASSWORD  # whitespace stripped
    for shown in (repr(from_file), str(from_env), f"{from_file}", repr([from_env])):
        assert PASSWORD not in shown and "***" in shown


@pytest.mark.parametrize(
    ("source", "key", "in_message"),
    [
        (SecretSource(file="/nonexistent/pw"), "kafka.sasl.password_file", "/nonexistent/pw"),
        (SecretSource(env="SENTINEL_TEST_UNSET"), "kafka.sasl.password_env", "SENTINEL_TEST_UNSET"),
        (SecretSource(), "kafka.sasl", "password_file or password_env"),
    ],
)
def test_missing_secret_is_a_config_error_naming_where_it_was_looked_for(
        source: SecretSource, key: str, in_message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_secret(source, "kafka.sasl")

    assert caught.value.key == key
    assert in_message in str(caught.value)


def test_empty_secret_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        read_secret(SecretSource(file=_secret_file(tmp_path, "   ")), "metrics.basic_auth")


def test_a_secret_pasted_into_an_env_key_is_not_echoed_in_the_error() -> None:
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["metrics"]["basic_auth"] = {"username": "prom", "password_env": PASSWORD}

    with pytest.raises(ConfigError) as caught:
        parse_config(doc)

    assert caught.value.key == "metrics.basic_auth.password_env"
    assert PASSWORD not in str(caught.value)


def test_url_with_credentials_is_refused_without_echoing_the_password() -> None:
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["alerting"]["webhooks"][0]["url"] = f"https://bot:{PASSWORD}@hooks.example.com/x"

    with pytest.raises(ConfigError) as caught:
        parse_config(doc)

    assert caught.value.key == "alerting.webhooks[0].url"
    assert "basic_auth" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert mask_url(f"https://bot:{PASSWORD}@h:1/x?q") == "https://bot:***@h:1/x?q"


def _secured_doc(tmp_path: Path) -> dict:
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["kafka"].update(security_protocol="SASL_SSL",
                        ssl={"ca_file": str(tmp_path / "ca.pem")},
                        sasl={"mechanism": "SCRAM-SHA-512", "username": "sentinel",
                              "password_file": str(tmp_path / "kafka.pw")})
    doc["metrics"].update(tls={"cert_file": "/etc/tls.crt", "key_file": "/etc/tls.key"},
                          basic_auth={"username": "prom", "password_env": "METRICS_PW"})
    doc["alerting"]["webhooks"][0].update(secret_env="HOOK_SECRET",
                                          basic_auth={"username": "bot", "password_file": "/p"})
    doc["alerting"]["alertmanager"] = {"url": "https://am:9093", "ca_file": "/ca.pem",
                                       "basic_auth": {"username": "am", "password_env": "AM_PW"}}
    return doc


def test_config_holds_where_secrets_are_not_what_they_are(tmp_path: Path) -> None:
    cfg = parse_config(_secured_doc(tmp_path))

    assert cfg.kafka.sasl is not None and cfg.kafka.sasl.password == SecretSource(
        str(tmp_path / "kafka.pw"), None)
    assert cfg.metrics == MetricsConfig("127.0.0.1:9108", ServerTlsConfig("/etc/tls.crt", "/etc/tls.key"),
                                        MetricsAuthConfig("prom", None, "METRICS_PW"))
    assert cfg.alerting.webhooks[0].basic_auth == BasicAuthConfig("bot", "/p")
    assert cfg.alerting.alertmanager is not None and cfg.alerting.alertmanager.ca_file == "/ca.pem"


def test_check_config_dump_prints_the_effective_config_without_secrets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_PW", PASSWORD)
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump(_secured_doc(tmp_path)))

    assert cli.main(["check-config", str(path), "--dump"]) == 0
    out = capsys.readouterr().out

    dumped = yaml.safe_load(out)
    assert dumped["kafka"]["sasl"]["password_file"] == str(tmp_path / "kafka.pw")
    assert dumped["metrics"]["basic_auth"]["password_env"] == "METRICS_PW"
    assert dumped["window_seconds"] == 600
    assert PASSWORD not in out
    assert dump_config(load_config(path)) == out


# --- the metrics listener: TLS and basic auth ------------------------------------------------

@pytest.fixture
def secured_server(pki: Pki, tmp_path: Path) -> Iterator[HealthServer]:
    config = MetricsConfig("127.0.0.1:1", ServerTlsConfig(str(pki.cert_file), str(pki.key_file)),
                           MetricsAuthConfig("prom", _secret_file(tmp_path, PASSWORD)))
    registry = CollectorRegistry()
    Counter("sentinel_test_total", "a metric to scrape", registry=registry).inc(3)
    state = HealthState(stall_after_seconds=30.0)
    server = HealthServer.from_config(config, registry, state)
    server.port = 0
    server.start()
    yield server
    server.stop()


def _get(url: str, context: ssl.SSLContext | None, user: str | None = None,
         password: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@pytest.mark.parametrize(
    ("user", "password", "status"),
    [("prom", PASSWORD, 200), (None, None, 401), ("prom", "wrong", 401), ("other", PASSWORD, 401),
     ("prom", PASSWORD + "x", 401)],
)
def test_metrics_need_https_and_the_configured_credentials(
        secured_server: HealthServer, pki: Pki, user: str | None, password: str | None,
        status: int) -> None:
    url = f"https://127.0.0.1:{secured_server.port}/metrics"

    got, body, headers = _get(url, pki.client_context(), user, password)

    assert got == status
    if status == 200:
        assert b"sentinel_test_total 3.0" in body
    else:
        assert headers["WWW-Authenticate"].startswith("Basic")
        assert b"sentinel_test" not in body


def test_probes_stay_open_for_the_kubelet_unless_told_otherwise(
        secured_server: HealthServer, pki: Pki) -> None:
    base = f"https://127.0.0.1:{secured_server.port}"

    assert _get(f"{base}/healthz", pki.client_context())[0] == 200
    assert _get(f"{base}/readyz", pki.client_context())[0] == 503  # open, and not ready yet
    assert secured_server.auth is not None
    secured_server.auth.open_probes = False
    assert _get(f"{base}/healthz", pki.client_context())[0] == 401
    assert _get(f"{base}/healthz", pki.client_context(), "prom", PASSWORD)[0] == 200


def test_metrics_listener_refuses_plain_http_and_untrusted_clients_cannot_verify_it(
        secured_server: HealthServer, pki: Pki) -> None:
    port = secured_server.port

    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        _get(f"http://127.0.0.1:{port}/metrics", None, "prom", PASSWORD)
    untrusted = ssl.create_default_context(cafile=str(pki.other_ca_file))
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(f"https://127.0.0.1:{port}/metrics", untrusted, "prom", PASSWORD)
    # the listener survived both
    assert _get(f"https://127.0.0.1:{port}/metrics", pki.client_context(), "prom", PASSWORD)[0] == 200


def test_a_client_that_never_handshakes_does_not_block_other_scrapes(
        secured_server: HealthServer, pki: Pki) -> None:
    with socket.create_connection(("127.0.0.1", secured_server.port)):  # connects, says nothing
        started = time.monotonic()
        status = _get(f"https://127.0.0.1:{secured_server.port}/metrics", pki.client_context(),
                      "prom", PASSWORD)[0]

    assert status == 200
    assert time.monotonic() - started < 3.0


def test_bad_certificate_path_is_a_config_error_at_start_up(tmp_path: Path) -> None:
    config = MetricsConfig("127.0.0.1:0", ServerTlsConfig(str(tmp_path / "absent.pem"), "k.pem"))

    with pytest.raises(ConfigError) as caught:
        HealthServer.from_config(config, CollectorRegistry(), HealthState(30.0))

    assert caught.value.key == "metrics.tls.cert_file"
    assert "absent.pem" in str(caught.value)


# --- alert sinks: verified HTTPS, credentials, no redirects ----------------------------------

@pytest.fixture
def notifiers() -> Iterator[list[Notifier]]:
    made: list[Notifier] = []
    yield made
    for notifier in made:
        notifier.stop(0.5)


def _notifier(tmp_path: Path, notifiers: list[Notifier], registry: CollectorRegistry,
              webhooks: tuple[WebhookConfig, ...] = (),
              alertmanager: AlertmanagerConfig | None = None) -> Notifier:
    config = AlertingConfig(webhooks=webhooks, delivery=FAST, alertmanager=alertmanager)
    notifier = Notifier(config, tmp_path / "state", registry=registry)
    notifiers.append(notifier)
    notifier.start()
    return notifier


def _outcome(registry: CollectorRegistry, outcome: str, sink: str = "webhook0") -> float:
    return registry.get_sample_value("sentinel_webhook_deliveries_total",
                                     {"sink": sink, "outcome": outcome}) or 0.0


def _wait(condition: object, timeout_seconds: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_https_webhook_is_delivered_when_its_ca_file_verifies_the_receiver(
        pki: Pki, tmp_path: Path, notifiers: list[Notifier]) -> None:
    receiver = Receiver(pki=pki).start()
    registry = CollectorRegistry()
    try:
        notifier = _notifier(tmp_path, notifiers, registry,
                             (WebhookConfig(receiver.url(), 2.0, ca_file=str(pki.ca_file)),))
        notifier.submit(FIRING)
        _wait(lambda: _outcome(registry, "delivered") == 1)
    finally:
        receiver.stop()

    assert receiver.received[0].json()["alerts"][0]["labels"]["service"] == "checkout"  # type: ignore[index]


@pytest.mark.parametrize("trust", ["system CAs", "another CA"])
def test_https_webhook_with_an_unverifiable_certificate_is_not_delivered(
        pki: Pki, tmp_path: Path, notifiers: list[Notifier], trust: str,
        caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(pki=pki).start()
    registry = CollectorRegistry()
    ca_file = None if trust == "system CAs" else str(pki.other_ca_file)
    try:
        with caplog.at_level(logging.WARNING, "sentinel.sinks"):
            notifier = _notifier(tmp_path, notifiers, registry,
                                 (WebhookConfig(receiver.url(), 2.0, ca_file=ca_file),))
            notifier.submit(FIRING)
            _wait(lambda: _outcome(registry, "retried") >= 2)
    finally:
        receiver.stop()

    assert receiver.received == []
    assert _outcome(registry, "delivered") == 0
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_https_webhook_whose_certificate_names_another_host_is_not_delivered(
        tmp_path: Path, notifiers: list[Notifier]) -> None:
    pki = Pki.create(tmp_path, "alerts.example.com")  # the URL says 127.0.0.1
    receiver = Receiver(pki=pki).start()
    registry = CollectorRegistry()
    try:
        notifier = _notifier(tmp_path, notifiers, registry,
                             (WebhookConfig(receiver.url(), 2.0, ca_file=str(pki.ca_file)),))
        notifier.submit(FIRING)
        _wait(lambda: _outcome(registry, "retried") >= 1)
    finally:
        receiver.stop()

    assert receiver.received == []


def test_redirect_to_another_host_is_not_followed_and_is_logged(
        tmp_path: Path, notifiers: list[Notifier], caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = Receiver().start()
    redirector = Receiver().start()
    redirector.default = Reply(302, {"Location": elsewhere.url()})
    registry = CollectorRegistry()
    try:
        with caplog.at_level(logging.WARNING, "sentinel.sinks"):
            notifier = _notifier(tmp_path, notifiers, registry,
                                 (WebhookConfig(redirector.url(), 2.0, secret_env=None),))
            notifier.submit(FIRING)
            _wait(lambda: _outcome(registry, "rejected") == 1)
            time.sleep(0.2)  # time enough for a follow-up request, were one made
    finally:
        redirector.stop()
        elsewhere.stop()

    assert len(redirector.received) == 1
    assert elsewhere.received == []
    assert f"HTTP 302 redirect to '{elsewhere.url()}' not followed" in caplog.text


def test_sink_credentials_come_from_files_and_env_and_reach_the_receiver(
        tmp_path: Path, notifiers: list[Notifier], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_TEST_AM_PW", "am-" + PASSWORD)
    webhook, alertmanager = Receiver().start(), Receiver().start()
    registry = CollectorRegistry()
    try:
        hook = WebhookConfig(webhook.url(), 2.0,
                             basic_auth=BasicAuthConfig("bot", _secret_file(tmp_path, PASSWORD)))
        am = AlertmanagerConfig(f"http://127.0.0.1:{alertmanager.port}", watchdog=False,
                                basic_auth=BasicAuthConfig("am", password_env="SENTINEL_TEST_AM_PW"))
        notifier = _notifier(tmp_path, notifiers, registry, (hook,), am)
        notifier.submit(FIRING)
        _wait(lambda: webhook.received and alertmanager.received)
    finally:
        webhook.stop()
        alertmanager.stop()

    def credentials(got: list) -> str:
        return base64.b64decode(got[0].headers["Authorization"].split()[1]).decode()

    assert credentials(webhook.received) == f"bot:{PASSWORD}"
    assert credentials(alertmanager.received) == f"am:am-{PASSWORD}"
    assert alertmanager.received[0].path == "/api/v2/alerts"


def test_missing_sink_password_stops_start_up(tmp_path: Path) -> None:
    config = AlertingConfig(alertmanager=AlertmanagerConfig(
        "http://127.0.0.1:9", basic_auth=BasicAuthConfig("am", password_env="SENTINEL_TEST_UNSET")))

    with pytest.raises(ConfigError) as caught:
        Notifier(config, tmp_path / "state", registry=CollectorRegistry())

    assert caught.value.key == "alerting.alertmanager.basic_auth.password_env"


def test_request_repr_hides_the_authorization_header() -> None:
    from sentinel.sinks.base import Request

    request = Request("http://h/", b"{}", {"Authorization": f"Basic {PASSWORD}"})

    assert PASSWORD not in repr(request)
    assert repr(Secret(PASSWORD)) == "Secret('***')"
