"""The edge to kafka-python: client settings, the one producer factory, error mapping.

    >>> with kafka_errors("commit failed"):       # any KafkaError -> KafkaUnavailable
    ...     consumer.commit(offsets)
    >>> producer = make_producer(config.bootstrap_servers, client_security(config), acks="all")

kafka-python's exceptions never leave this package: they become `KafkaUnavailable`
(sentinel.errors) here, raised ``from`` the original.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from sentinel.config.schema import KafkaConfig
from sentinel.config.secrets import read_secret
from sentinel.errors import KafkaUnavailable
from sentinel.tls import client_context

log = logging.getLogger(__name__)


REQUEST_TIMEOUT_SECONDS = 5.0  # bound on each blocking call: commit, committed, offsets
BOOTSTRAP_TIMEOUT_SECONDS = 5.0  # a client that cannot reach any broker gives up this soon
# kafka-python backs reconnects off up to 30 s by default: a broker back from an outage
# would wait up to that long for Sentinel. 2 s is a few connection attempts a minute.
RECONNECT_BACKOFF_MAX_MS = 2000



def client_security(config: KafkaConfig) -> dict[str, Any]:
    """kafka-python keyword arguments for `config.security_protocol` (empty for PLAINTEXT).

    Builds the TLS context and reads the SASL password now, so a missing file or variable is
    a ConfigError at start-up. The result holds the password: hand it to kafka-python only,
    never log it.
    """
    protocol = config.security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        ssl = config.ssl
        options["ssl_context"] = client_context(
            "kafka.ssl", ssl.ca_file, ssl.cert_file, ssl.key_file, ssl.check_hostname
        ) if ssl else client_context("kafka.ssl")
    if config.sasl is not None:
        if config.sasl.mechanism == "PLAIN" and protocol == "SASL_PLAINTEXT":
            log.warning("kafka: SASL PLAIN over SASL_PLAINTEXT sends the password in clear; "
                        "use SASL_SSL")
        options.update(sasl_mechanism=config.sasl.mechanism,
                       sasl_plain_username=config.sasl.username,
                       sasl_plain_password=read_secret(config.sasl.password, "kafka.sasl").reveal())
    return options



@contextlib.contextmanager
def kafka_errors(what: str) -> Iterator[None]:
    """Translate a kafka-python error in the block into `KafkaUnavailable("<what>: <error>")`."""
    try:
        yield
    except KafkaError as exc:
        raise KafkaUnavailable(f"{what}: {exc}") from exc


def make_producer(bootstrap_servers: str | Sequence[str], security: Mapping[str, Any] | None = None,
                  **options: Any) -> KafkaProducer:
    """A kafka-python producer (linger 20 ms unless `options` say otherwise); `security` is
    `client_security(config)`. KafkaUnavailable when no broker answers."""
    servers = bootstrap_servers if isinstance(bootstrap_servers, str) else list(bootstrap_servers)
    where = servers if isinstance(servers, str) else ",".join(servers)
    with kafka_errors(f"cannot connect to Kafka at {where}"):
        return KafkaProducer(bootstrap_servers=servers, **{"linger_ms": 20, **options},
                             **dict(security or {}))
