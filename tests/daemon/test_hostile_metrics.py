"""One bad service name must not blind /metrics; a failing scrape must be impossible to miss."""

from __future__ import annotations

import json
import logging

from prometheus_client import CollectorRegistry

from sentinel.daemon.health import HealthServer, HealthState
from sentinel.daemon.telemetry import Telemetry
from tests.testkit.daemon import http_get
from tests.testkit.loop import T0, make_loop, rec


def test_a_lone_surrogate_service_is_rejected_and_metrics_keep_serving() -> None:
    loop = make_loop(risk=0.2)
    bad = b'{"service": "sur\\ud800", "ts": %d, "metrics": {"qps": 1}}'
    records = []
    for i in range(8):
        records += [rec(2 * i, "cart", step=i), rec(2 * i + 1, value=bad % (T0 + 10 * i))]
    loop.feed(*records)
    server = HealthServer("127.0.0.1", 0, loop.registry, loop.daemon.health).start()
    try:
        status, body = http_get(server.port, "/metrics")
    finally:
        server.stop()

    assert loop.metric("sentinel_samples_rejected_total", reason="invalid_service") == 8
    assert status == 200 and b'sentinel_failure_risk{service="cart"}' in body


class Exploding:
    def collect(self):
        raise UnicodeEncodeError("utf-8", "sur\ud800", 3, 4, "surrogates not allowed")


def test_a_failing_scrape_answers_500_fails_readiness_counts_and_logs(caplog) -> None:
    registry = CollectorRegistry()
    Telemetry(registry)
    state = HealthState(30.0)
    for check in ("model", "partitions", "broker"):
        state.set_check(check, True, "ok")
    server = HealthServer("127.0.0.1", 0, registry, state).start()
    bomb = Exploding()
    try:
        registry.register(bomb)
        with caplog.at_level(logging.ERROR, logger="sentinel.daemon.health"):
            status, body = http_get(server.port, "/metrics")
        assert status == 500 and b"UnicodeEncodeError" in body
        assert any("/metrics scrape failed" in r.getMessage() for r in caplog.records)
        ready_status, ready = http_get(server.port, "/readyz")
        assert ready_status == 503 and json.loads(ready)["failing"] == ["metrics"]

        registry.unregister(bomb)
        status, body = http_get(server.port, "/metrics")
        assert status == 200 and b"sentinel_scrape_failures_total 1.0" in body
        assert http_get(server.port, "/readyz")[0] == 200
    finally:
        server.stop()


def test_risk_exposition_never_fails_on_an_unencodable_name() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    telemetry.set_risk("sur\ud800", 0.5)  # only if something bypassed decode
    telemetry.set_risk("cart", 0.25)
    from sentinel.daemon.telemetry import exposition

    assert b'sentinel_failure_risk{service="cart"} 0.25' in exposition(registry)
