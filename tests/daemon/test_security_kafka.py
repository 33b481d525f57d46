"""Kafka over TLS, for real: Tansu behind a TLS-terminating proxy that it advertises, so every
connection (bootstrap, group coordinator, fetches) goes through TLS. SASL: see the last tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer

from sentinel import cli
from sentinel.config.schema import KafkaConfig, KafkaSaslConfig, KafkaSslConfig
from sentinel.config.secrets import SecretSource
from sentinel.daemon.kafka_io import DeadLetters, KafkaSource, KafkaUnavailable, Record, client_security
from sentinel.errors import ConfigError
from tests.testkit.security import Pki, SecuredBroker

PASSWORD = "kafka-pw-7Yt!x"
SHIPPED = Path(__file__).resolve().parents[2] / "config" / "sentinel.yaml"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(pki: Pki, tmp_path: Path) -> Iterator[SecuredBroker]:
    with SecuredBroker(tmp_path, pki) as broker:
        yield broker


def _tls_config(broker: SecuredBroker, ca_file: Path, topic: str = "metrics") -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=(broker.tls_bootstrap,), topic=topic, group_id="tls",
                       poll_timeout_seconds=0.2, session_timeout_seconds=2.0,
                       dead_letter_topic=f"{topic}.dlq", security_protocol="SSL",
                       ssl=KafkaSslConfig(ca_file=str(ca_file)))


def test_consumer_and_dead_letter_producer_work_over_verified_tls(
        tls_broker: SecuredBroker, pki: Pki) -> None:
    records = _round_trip(_tls_config(tls_broker, pki.ca_file),
                          [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}'])

    assert [r.value for r in records] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert tls_broker.proxy.handshakes >= 2  # producer and consumer both came in over TLS
    assert tls_broker.proxy.failed_handshakes == 0


def _round_trip(config: KafkaConfig, values: list[bytes]) -> list[Record]:
    """Produce `values` with the dead-letter producer (it doubles as these tests' secured
    producer), then consume them with a KafkaSource and commit; both with `config`'s security."""
    security = client_security(config)
    letters = DeadLetters(config.bootstrap_servers, config.topic, "upstream", security)
    for offset, value in enumerate(values):
        letters.send(Record(0, offset, b"checkout", value, False), "test", "")
    assert letters.flush(10.0)
    letters.close()
    source = KafkaSource(config, on_revoked=lambda p: None, on_assigned=lambda p: None,
                         security=security)
    try:
        records: list[Record] = []
        deadline = time.monotonic() + 20
        while len(records) < len(values) and time.monotonic() < deadline:
            records += source.poll()
        source.commit({0: records[-1].offset + 1} if records else {})
    finally:
        source.close()
    return records


def test_broker_certificate_from_another_ca_is_refused(tls_broker: SecuredBroker, pki: Pki) -> None:
    config = _tls_config(tls_broker, pki.other_ca_file)

    with pytest.raises(KafkaUnavailable):
        KafkaSource(config, on_revoked=lambda p: None, on_assigned=lambda p: None)

    assert tls_broker.proxy.failed_handshakes >= 1
    assert tls_broker.proxy.handshakes == 0


# --- SASL ------------------------------------------------------------------------------------
# Tansu 0.6 can require SCRAM, but its users can only be created over an authenticated
# connection and its storage is in memory, so no Tansu here can hold a SASL user. The
# KafkaGateway in front of it plays the broker's side of SASL PLAIN and SCRAM (ApiVersions
# forwarded, SaslHandshake and SaslAuthenticate answered, nothing else allowed before a
# login), so kafka-python's real SASL client is exercised end to end.

@pytest.mark.parametrize(("mechanism", "protocol"), [
    ("PLAIN", "SASL_SSL"), ("PLAIN", "SASL_PLAINTEXT"), ("SCRAM-SHA-256", "SASL_SSL"),
    ("SCRAM-SHA-512", "SASL_PLAINTEXT")])
def test_sasl_login_with_the_password_from_its_file(
        tmp_path: Path, pki: Pki, mechanism: str, protocol: str) -> None:
    with SecuredBroker(tmp_path, pki if protocol == "SASL_SSL" else None,
                       users={"sentinel": PASSWORD}) as broker:
        config = replace(_sasl_config(tmp_path, mechanism, protocol, str(pki.ca_file)),
                         bootstrap_servers=(broker.tls_bootstrap,), topic="metrics",
                         group_id="sasl", poll_timeout_seconds=0.2, session_timeout_seconds=2.0)
        records = _round_trip(config, [b"{}"])

    assert [r.value for r in records] == [b"{}"]
    assert broker.proxy.logins and set(broker.proxy.logins) == {("sentinel", True)}
    assert broker.proxy.handshakes == (len(broker.proxy.logins) if protocol == "SASL_SSL" else 0)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_wrong_sasl_password_is_refused_and_not_shown(tmp_path: Path, pki: Pki,
                                                      mechanism: str) -> None:
    with SecuredBroker(tmp_path, pki, users={"sentinel": "another-password"}) as broker:
        config = replace(_sasl_config(tmp_path, mechanism, "SASL_SSL", str(pki.ca_file)),
                         bootstrap_servers=(broker.tls_bootstrap,), topic="metrics")

        with pytest.raises(KafkaUnavailable) as caught:
            KafkaSource(config, on_revoked=lambda p: None, on_assigned=lambda p: None)

    assert broker.proxy.logins and set(broker.proxy.logins) == {("sentinel", False)}
    assert PASSWORD not in str(caught.value)


def _sasl_config(tmp_path: Path, mechanism: str = "SCRAM-SHA-512", protocol: str = "SASL_SSL",
                 ca_file: str | None = None) -> KafkaConfig:
    secret = tmp_path / "kafka.pw"
    secret.write_text(PASSWORD + "\n")
    return KafkaConfig(security_protocol=protocol,  # type: ignore[arg-type]
                       ssl=KafkaSslConfig(ca_file=ca_file) if protocol == "SASL_SSL" else None,
                       sasl=KafkaSaslConfig(mechanism, "sentinel", str(secret)))  # type: ignore[arg-type]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_settings_reach_the_kafka_clients(tmp_path: Path, pki: Pki, mechanism: str) -> None:
    options = client_security(_sasl_config(tmp_path, mechanism, ca_file=str(pki.ca_file)))

    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": mechanism,
        "sasl_plain_username": "sentinel", "sasl_plain_password": PASSWORD}
    context = options["ssl_context"]
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"
    # and kafka-python accepts them as they are (it validates them in its constructor)
    consumer = KafkaConsumer(bootstrap_servers="127.0.0.1:1", api_version=(2, 5), **options)
    try:
        assert consumer.config["sasl_mechanism"] == mechanism
        assert consumer.config["sasl_plain_password"] == PASSWORD
    finally:
        consumer.close(timeout_ms=100)


def test_sasl_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_TEST_KAFKA_PW", PASSWORD)
    config = KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl=KafkaSaslConfig(
        "SCRAM-SHA-256", "sentinel", password_env="SENTINEL_TEST_KAFKA_PW"))

    assert client_security(config)["sasl_plain_password"] == PASSWORD
    assert SecretSource(None, "SENTINEL_TEST_KAFKA_PW") == config.sasl.password  # type: ignore[union-attr]


def test_missing_sasl_password_is_a_config_error() -> None:
    config = KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl=KafkaSaslConfig(
        "PLAIN", "sentinel", password_file="/nonexistent/kafka.pw"))

    with pytest.raises(ConfigError) as caught:
        client_security(config)

    assert caught.value.key == "kafka.sasl.password_file"


def test_simulate_produces_to_a_tls_broker_with_the_daemon_config(
        tls_broker: SecuredBroker, pki: Pki, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    raw = yaml.safe_load(SHIPPED.read_text())
    raw["kafka"].update(security_protocol="SSL", ssl={"ca_file": str(pki.ca_file)})
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump(raw))

    assert cli.main(["simulate", "--services", "1", "--days", "0.01", "--kafka",
                     tls_broker.tls_bootstrap, "--topic", "sim", "--config", str(path)]) == 0

    assert json.loads(capsys.readouterr().out.splitlines()[-1])["written"] > 0
    assert tls_broker.proxy.handshakes >= 1 and tls_broker.proxy.failed_handshakes == 0
