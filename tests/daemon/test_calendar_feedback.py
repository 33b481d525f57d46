"""The daemon's edges for what the team knows: the live sale calendar (file reloads, the
compacted topic on a real broker) and POST /feedback (real HTTP, basic auth)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from sentinel.cli import main
from sentinel.config.calendar_file import calendar_text
from sentinel.config.schema import SaleEvent
from sentinel.config.secrets import Secret
from sentinel.core.context import ContextBatch
from sentinel.daemon.calendar_source import LiveCalendar, publish, read_topic
from sentinel.daemon.feedback_store import FeedbackEndpoint, feedback_path, read_feedback
from sentinel.daemon.health import BasicAuth, HealthServer, HealthState
from sentinel.errors import ConfigError
from tests.testkit.clock import FakeClock

T0 = 1_763_942_400
SALE = SaleEvent("double-11", T0 + 3600, T0 + 7200, None, 8.0)
LATER = SaleEvent("evening", T0 + 20_000, T0 + 21_000, ("checkout",), 3.0)


def _in_event(live: LiveCalendar, ts: int) -> float:
    batch = ContextBatch(("checkout",), np.array([ts]), 10, 3)
    return float(live.build(batch)[0, -1, 3])


def test_the_file_is_reloaded_when_it_changes_and_a_bad_edit_keeps_the_last_good(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sales.yaml"
    path.write_text(calendar_text([SALE]))
    clock = FakeClock()
    live = LiveCalendar(str(path), 10.0, clock=clock)
    assert _in_event(live, T0 + 4000) == 1.0 and live.events() == (SALE,)

    path.write_text(calendar_text([LATER]))
    assert live.events() == (SALE,)  # not checked again before reload_interval
    clock.advance(10)
    assert live.events() == (LATER,) and live.reloads == 1
    assert _in_event(live, T0 + 4000) == 0.0 and _in_event(live, T0 + 20_500) == 1.0

    path.write_text("events: [{name: broken, start: soon}]")
    clock.advance(10)
    assert live.events() == (LATER,)
    assert "keeping its last good 1 events" in caplog.text
    path.unlink()
    clock.advance(10)
    assert live.events() == (LATER,)


def test_a_bad_calendar_file_is_refused_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "sales.yaml"
    path.write_text("events: [{name: x, start: 1763942400, end: 1763942400}]")
    with pytest.raises(ConfigError, match="a time after start"):
        LiveCalendar(str(path), 10.0)


def _compacted_topic(bootstrap: str, name: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        admin.create_topics([NewTopic(name=name, num_partitions=2, replication_factor=1,
                                      topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()


def test_the_topic_holds_events_by_name_and_a_tombstone_deletes_one(kafka_broker) -> None:
    topic = "sentinel.calendar"
    _compacted_topic(kafka_broker.bootstrap, topic)
    servers = [kafka_broker.bootstrap]
    publish(servers, topic, SALE.name, SALE)
    publish(servers, topic, LATER.name, LATER)
    replaced = SaleEvent(SALE.name, SALE.start_ts, SALE.end_ts + 600, None, 5.0)
    publish(servers, topic, SALE.name, replaced)
    assert read_topic(servers, topic) == {SALE.name: replaced, LATER.name: LATER}
    publish(servers, topic, LATER.name, None)
    assert read_topic(servers, topic) == {SALE.name: replaced}


def test_cli_adds_to_file_and_topic_and_the_daemon_merges_them(kafka_broker, tmp_path: Path,
                                                                 capsys) -> None:
    topic = "sales"
    _compacted_topic(kafka_broker.bootstrap, topic)
    sales = tmp_path / "sales.yaml"
    sales.write_text(calendar_text([LATER]))
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "step": "10s", "window": "60s", "horizon": "30s", "features": [{"name": "qps"}],
        "failure": {"any": [{"metric": "qps", "op": ">=", "value": 1e6}]},
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap},
        "calendar": {"file": str(sales), "topic": topic}}))
    assert main(["calendar", "add", "--config", str(config), "--name", "double-11",
                 "--start", "2025-11-24T01:00:00Z", "--end", str(T0 + 7200),
                 "--multiplier", "8"]) == 0
    capsys.readouterr()
    assert main(["calendar", "list", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listed] == ["double-11", "evening"]

    from sentinel.config.load import load_config

    live = LiveCalendar.from_config(load_config(config))
    assert live is not None
    live.start()
    try:
        assert live.topic is not None and live.topic.caught_up.wait(10)
        assert [e.name for e in live.events()] == ["double-11", "evening"]
        assert live.event_at("search", T0 + 4000).name == "double-11"
    finally:
        live.stop()
    assert main(["calendar", "remove", "--config", str(config), "--name", "double-11"]) == 0
    capsys.readouterr()
    assert main(["calendar", "list", "--config", str(config), "--json"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == ["evening"]


def _post(url: str, body: bytes, password: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST")
    if password is not None:
        token = base64.b64encode(f"ops:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_feedback_over_http_is_authenticated_like_metrics_and_recorded(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    server = HealthServer("127.0.0.1", 0, registry, HealthState(30.0),
                          auth=BasicAuth("ops", Secret("s3cret")),
                          on_feedback=FeedbackEndpoint(tmp_path, registry, lambda: 1e9)).start()
    url = f"http://127.0.0.1:{server.port}/feedback"
    good = json.dumps({"episode": "checkout@2025-11-23T12:00:00Z", "verdict": "false_alarm",
                       "note": "load test"}).encode()
    try:
        assert _post(url, good, None)[0] == 401
        assert _post(url, good, "wrong")[0] == 401
        status, answer = _post(url, good, "s3cret")
        assert status == 201 and answer["started_ts"] == 1763899200
        for body, field in ((b"{", "JSON object"), (b'{"verdict": "confirmed"}', "episode"),
                            (json.dumps({"episode": "checkout@2025-11-23T12:00:00Z",
                                         "verdict": "maybe"}).encode(), "verdict")):
            status, answer = _post(url, body, "s3cret")
            assert status == 400 and field in answer["error"]
        assert _post(f"http://127.0.0.1:{server.port}/other", good, "s3cret")[0] == 404
    finally:
        server.stop()
    assert [(f.service, f.verdict) for f in read_feedback(feedback_path(tmp_path))] == [
        ("checkout", "false_alarm")]
    assert registry.get_sample_value("sentinel_feedback_total", {"verdict": "false_alarm"}) == 1


def test_cli_feedback_appends_and_the_latest_verdict_wins(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "step": "10s", "window": "60s", "horizon": "30s", "features": [{"name": "qps"}],
        "failure": {"any": [{"metric": "qps", "op": ">=", "value": 1e6}]},
        "state": {"dir": str(tmp_path / "state")}}))
    key = "checkout@1763899200"
    assert main(["feedback", "--config", str(config), "--episode", key, "--false-alarm"]) == 0
    assert main(["feedback", "--config", str(config), "--episode", "cart@1763899300",
                 "--confirmed", "--note", "db"]) == 0
    path = feedback_path(tmp_path / "state")
    with path.open("a") as handle:
        handle.write('{"episode": "torn\n')  # a crash mid-append
    assert main(["feedback", "--config", str(config), "--episode", key, "--confirmed"]) == 0
    assert main(["feedback", "--config", str(config), "--episode", "checkout", "--confirmed"]) == 2
    assert "expected <service>@<startsAt>" in capsys.readouterr().err
    verdicts = [(f.service, f.verdict, f.note) for f in read_feedback(path)]
    assert verdicts == [("cart", "confirmed", "db"), ("checkout", "confirmed", "")]
