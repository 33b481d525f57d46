"""`sentinel run` against a real Kafka-protocol broker (tansu) and a real webhook receiver.

Where process behaviour matters (SIGKILL, SIGTERM, exit codes) the daemon is a subprocess
(`python -m sentinel run`); elsewhere it is the same App on a thread. The model is a small
one trained once per session; the alert threshold is set from its risk on the test stream,
so that alerts do fire.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections import defaultdict
from datetime import datetime

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sentinel.cli import main
from sentinel.config.schema import AlertingConfig, AlertmanagerConfig, WebhookConfig
from sentinel.core.alerts import AlertTransition
from sentinel.daemon.health import HealthServer, HealthState
from sentinel.daemon.kafka_io import DeadLetters, KafkaUnavailable, Record
from sentinel.daemon.telemetry import Telemetry, exposition
from sentinel.sim import simulate
from sentinel.sinks import Notifier, OutboxError
from tests.testkit.broker import TansuBroker
from tests.testkit.clock import FakeClock
from tests.testkit.daemon import (
    STREAM,
    DaemonProcess,
    Expected,
    InProcessDaemon,
    Scrape,
    committed_offsets,
    config_for,
    consume_all,
    end_offsets,
    expected,
    http_get,
    keyed,
    produce,
    readiness,
    scrape,
    write_config,
)
from tests.testkit.http import Receiver
from tests.testkit.loop import (
    T0,
    FakeNotifier,
    make_loop,
    rec,
)
from tests.testkit.wait import wait_until


def assert_delivered(receiver: Receiver, want: Expected) -> None:
    """Every expected episode arrived; a duplicate is the same alert under the same key."""
    assert want.transitions, "the stream must cause alert transitions for this test to mean much"
    wait_until(lambda: want.keys <= receiver.keys(), 20,
               lambda: f"deliveries; missing {sorted(want.keys - receiver.keys())}")
    by_alert: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for request in receiver.received:
        assert request.json()["version"] == "4"  # type: ignore[index]
        by_alert[request.alert].add(request.key)
    assert all(len(keys) == 1 for keys in by_alert.values()), by_alert
    assert receiver.keys() == want.keys


# --- 1. parity with the backtest -------------------------------------------------------------

@pytest.mark.slow
def test_live_stream_raises_the_same_alerts_as_the_backtest(kafka_broker, trained, tmp_path,
                                                            receiver):
    kafka_broker.create_topic("metrics", partitions=2)
    _, config = config_for(tmp_path, kafka_broker, trained, topic="metrics",
                           webhook_port=receiver.port)
    want = expected(config, trained[0], STREAM)
    produced = produce(kafka_broker.bootstrap, "metrics", keyed(STREAM))
    daemon = InProcessDaemon(config).start()
    try:
        wait_until(lambda: daemon.metric("sentinel_samples_total") == produced, 30,
                   "every sample consumed")
        assert_delivered(receiver, want)
        scraped = scrape(config.metrics.port)
    finally:
        assert daemon.stop() == 0
    # (service, state, ts) as the receiver got them: a firing's ts is its startsAt, a
    # resolve's its endsAt
    alerts = [r.json()["alerts"][0] for r in receiver.received]  # type: ignore[index]
    got = sorted((a["labels"]["service"], a["status"],
                  _unix(a["startsAt"] if a["status"] == "firing" else a["endsAt"]))
                 for a in alerts)
    assert got == sorted((t.service, t.state, t.ts) for t in want.transitions)
    # live == backtest for the drivers too: each firing's payload names the metrics behind it
    # in the backtest's order, with the same contributions and words
    backtest = {(t.service, t.ts): t.drivers for t in want.transitions if t.state == "firing"}
    assert any(backtest.values()), "the stream must fire with drivers for this to mean much"
    for alert in alerts:
        if alert["status"] != "firing":
            assert "drivers" not in alert["annotations"]
            continue
        drivers = backtest[(alert["labels"]["service"], _unix(alert["startsAt"]))]
        received = json.loads(alert["annotations"].get("drivers", "[]"))
        assert [d["metric"] for d in received] == [d.metric for d in drivers]
        assert [d["text"] for d in received] == [d.text for d in drivers]
        assert [d["contribution"] for d in received] == pytest.approx(
            [d.contribution for d in drivers], abs=2e-4)
        if drivers:
            assert alert["annotations"]["summary"].endswith(f"; mostly {drivers[0].text}")
    # the drivers gauge exists only for services still firing at the end of the stream
    last = {t.service: t.state for t in sorted(want.transitions, key=lambda t: t.ts)}
    firing_at_end = {service for service, state in last.items() if state == "firing"}
    assert scraped.labels("sentinel_alert_driver", "service") <= firing_at_end
    assert scraped.get("sentinel_alerts_total", state="firing") == sum(
        t.state == "firing" for t in want.transitions)
    assert scraped.get("sentinel_scoring_batch_size_sum") == len(want.scored)
    assert scraped.labels("sentinel_failure_risk", "service") == {s for s, _ in want.scored}


def _unix(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())


# --- 2. crash ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_sample_and_no_alert(kafka_broker, trained, tmp_path,
                                                         receiver):
    kafka_broker.create_topic("metrics", partitions=1)
    path, config = config_for(tmp_path, kafka_broker, trained, topic="metrics",
                              webhook_port=receiver.port, kafka={"max_poll_records": 100})
    want = expected(config, trained[0], STREAM)
    cut = len(STREAM) * 6 // 10
    produce(kafka_broker.bootstrap, "metrics", keyed(STREAM[:cut]))
    first = DaemonProcess(path, config, tmp_path / "run1.log").start()
    try:
        wait_until(lambda: first.metric("sentinel_samples_total") >= cut // 3, 60,
                   lambda: f"progress; log:\n{first.log_tail()}")
    finally:
        first.kill()
    committed = committed_offsets(kafka_broker.bootstrap, "metrics", "sentinel")
    produce(kafka_broker.bootstrap, "metrics", keyed(STREAM[cut:]))
    second = DaemonProcess(path, config, tmp_path / "run2.log").start()
    try:
        rest = len(STREAM) - committed[0]
        wait_until(lambda: second.metric("sentinel_samples_total") >= rest, 60,
                   lambda: f"the rest consumed; log:\n{second.log_tail()}")
        assert_delivered(receiver, want)
        metrics = second.scrape()
        second.signal(signal.SIGTERM)
        assert second.wait(10) == 0
    finally:
        second.kill()
    # every record counted by a run: the killed one logged each batch before committing it
    first_counted = sum(b["samples"] for b in first.events("batch"))
    second_counted = sum(metrics.get("sentinel_samples_outcome_total", outcome=o)
                         for o in ("accepted", "late", "rejected"))
    assert first_counted + second_counted >= len(STREAM)
    assert second_counted == rest
    scored = {(e["service"], e["event_ts"]) for e in first.events("score") + second.events("score")}
    assert want.scored <= scored


# --- 3. scale-out -----------------------------------------------------------------------------

@pytest.mark.slow
def test_two_replicas_split_the_services_and_the_survivor_takes_over(kafka_broker, trained,
                                                                    tmp_path):
    kafka_broker.create_topic("metrics", partitions=4)
    samples = simulate.simulate(services=6, days=0.1, seed=3).samples
    names = {s["service"] for s in samples}
    half = len(samples) // 2
    daemons = []
    for name in ("a", "b"):
        path, config = config_for(tmp_path, kafka_broker, trained, name=name, topic="metrics")
        daemons.append(DaemonProcess(path, config, tmp_path / f"{name}.log").start())
    a, b = daemons
    try:
        owners: list = []

        def split() -> bool:
            """Both ready, owning two partitions each, for a second in a row (settled)."""
            ready = [d.readiness() for d in daemons]
            owned = [json.loads(r["checks"]["partitions"]["detail"].removeprefix("assigned "))
                     if r["code"] == 200 else [] for r in ready]
            owners.append((time.monotonic(), owned))
            settled = [o for t, o in owners if t > time.monotonic() - 1.0]
            return (owners[0][0] < time.monotonic() - 1.0 and all(o == owned for o in settled)
                    and sorted(owned[0] + owned[1]) == [0, 1, 2, 3])

        wait_until(split, 60, "both replicas ready with two partitions each", 0.2)
        produce(kafka_broker.bootstrap, "metrics", keyed(samples[:half]))

        def consumed() -> bool:
            lag = [d.scrape().labels("sentinel_consumer_lag", "partition") for d in daemons]
            return (sorted(lag[0] | lag[1]) == ["0", "1", "2", "3"]
                    and a.metric("sentinel_samples_total") + b.metric("sentinel_samples_total")
                    >= half and not any(d.scrape().get("sentinel_consumer_lag", partition=p)
                                        for d in daemons for p in "0123"))

        wait_until(consumed, 30, "the first half consumed", 0.2)
        scored_a = a.scrape().labels("sentinel_failure_risk", "service")
        scored_b = b.scrape().labels("sentinel_failure_risk", "service")
        assert scored_a and scored_b
        assert not scored_a & scored_b
        assert scored_a | scored_b == names

        b.signal(signal.SIGTERM)
        assert b.wait(10) == 0
        wait_until(lambda: "[0, 1, 2, 3]" in json.dumps(a.readiness()), 30,
                   "the survivor owns every partition", 0.2)
        produce(kafka_broker.bootstrap, "metrics", keyed(samples[half:]))
        second_half_ts = samples[half]["ts"] + 60

        def survivor_scores_all() -> bool:
            return {e["service"] for e in a.events("score")
                    if e["live"] and e["event_ts"] > second_half_ts} == names

        wait_until(survivor_scores_all, 30, "the survivor scoring every service", 0.2)
        assert a.metric("sentinel_warmup_records_total") > 0  # b's windows were rebuilt
        assert a.scrape().labels("sentinel_failure_risk", "service") == names
    finally:
        for daemon in daemons:
            daemon.kill()


# --- 4. bad messages ----------------------------------------------------------------------------

def bad_corpus(now: float) -> list[tuple[bytes | None, bytes, str | None]]:
    """(key, value, reason) of every kind of bad message; reason None: accepted anyway."""
    good = {"service": "cart", "ts": STREAM[100]["ts"], "metrics": {"qps": 1.0}}

    def doc(**changes: object) -> bytes:
        return json.dumps({**good, **changes}).encode()

    return [
        (b"cart", b'{"service": "cart", "ts": 17', "malformed_json"),
        (b"cart", b"\xff\xfe not utf-8", "malformed_json"),
        (None, b"", "malformed_json"),
        (b"cart", b"[1, 2, 3]", "not_an_object"),
        (b"cart", b'{"service": "cart", "metrics": {"qps": 1}}', "missing_field"),
        (b"cart", json.dumps({"ts": 1, "metrics": {}}).encode(), "missing_field"),
        (b"cart", doc(service=42), "invalid_service"),
        (b"cart", doc(ts="yesterday"), "invalid_ts"),
        (b"cart", doc(ts=1_763_942_400_000), "ts_out_of_range"),
        (b"cart", doc(ts=now + 86400), "future_ts"),
        (b"cart", doc(metrics=[1, 2]), "invalid_metrics"),
        (b"cart", b'{"service": "cart", "ts": 1763942400, "metrics": {"qps": NaN}}',
         "no_valid_metrics"),
        (b"cart", b'{"service": "cart", "ts": 1763942400, "metrics": {"qps": Infinity}}',
         "no_valid_metrics"),
        (b"cart", doc(metrics={"qps": "fast"}), "no_valid_metrics"),
        (b"cart", doc(pad="x" * 70_000), "too_large"),
    ]


@pytest.mark.slow
def test_bad_messages_are_counted_dead_lettered_and_never_stop_the_loop(kafka_broker, trained,
                                                                        tmp_path):
    kafka_broker.create_topic("metrics", partitions=1)
    _, config = config_for(tmp_path, kafka_broker, trained, topic="metrics",
                           kafka={"dead_letter_topic": "metrics.dlq"})
    good = STREAM[:3000]
    corpus = bad_corpus(time.time())
    bad = list(corpus)
    mixed: list[tuple[bytes | None, bytes]] = []
    for i, message in enumerate(keyed(good)):
        mixed.append(message)
        if i % 100 == 50 and bad:
            key, value, _ = bad.pop(0)
            mixed.append((key, value))
        if i % 100 == 70:
            mixed.append(message)  # a producer retry: accepted, merged into the same bucket
    produce(kafka_broker.bootstrap, "metrics", mixed)
    duplicates = len(mixed) - len(good) - len(corpus)
    daemon = InProcessDaemon(config).start()
    try:
        wait_until(lambda: daemon.metric("sentinel_samples_total") == len(good) + duplicates
                   and daemon.metric("sentinel_samples_outcome_total", outcome="rejected")
                   == len(corpus), 30, "every message consumed")
        scraped = scrape(config.metrics.port)
        reasons: dict[str, int] = defaultdict(int)
        for _, _, reason in corpus:
            reasons[reason] += 1
        for reason, count in reasons.items():
            assert scraped.get("sentinel_samples_rejected_total", reason=reason) == count, reason
        assert scraped.get("sentinel_samples_outcome_total", outcome="accepted") == len(good) + duplicates
        assert readiness(config.metrics.port)["code"] == 200
        assert daemon.thread.is_alive()
        # the good samples are all scored: every window the backtest closes, once
        want = expected(config, trained[0], good)
        assert scraped.get("sentinel_scoring_batch_size_sum") == len(want.scored)
    finally:
        assert daemon.stop() == 0
    letters = consume_all(kafka_broker.bootstrap, "metrics.dlq", len(corpus))
    assert sorted(dict(r.headers)["sentinel-reason"].decode() for r in letters) == sorted(
        reason for _, _, reason in corpus)
    for letter in letters:
        headers = dict(letter.headers)
        origin = json.loads(headers["sentinel-origin"])
        assert origin["topic"] == "metrics" and origin["partition"] == 0
        assert int(headers["sentinel-origin-offset"]) == origin["offset"]
        assert headers["sentinel-origin-topic"] == b"metrics"
        assert mixed[origin["offset"]][1] == letter.value  # the original bytes


# --- 5. receiver down ---------------------------------------------------------------------------

@pytest.mark.slow
def test_alerts_wait_in_the_outbox_while_the_receiver_is_down(kafka_broker, trained, tmp_path):
    kafka_broker.create_topic("metrics", partitions=1)
    down = Receiver().start()
    port = down.port
    down.stop()  # the port is ours, nobody listens on it
    _, config = config_for(tmp_path, kafka_broker, trained, topic="metrics", webhook_port=port)
    want = expected(config, trained[0], STREAM)
    produced = produce(kafka_broker.bootstrap, "metrics", keyed(STREAM))
    daemon = InProcessDaemon(config).start()
    receiver = Receiver(port)
    try:
        wait_until(lambda: daemon.metric("sentinel_samples_total") == produced, 30,
                   "every sample consumed")
        wait_until(lambda: daemon.metric("sentinel_consumer_lag", partition="0") == 0
                   and daemon.metric("sentinel_outbox_pending") == len(want.transitions), 10,
                   "lag 0 with every alert pending")
        assert daemon.metric("sentinel_webhook_deliveries_total", sink="webhook0",
                             outcome="retried") > 0
        receiver.start()
        assert_delivered(receiver, want)
        wait_until(lambda: daemon.metric("sentinel_outbox_pending") == 0, 10, "an empty outbox")
    finally:
        receiver.stop()
        assert daemon.stop() == 0


# --- 6. graceful stop -----------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_commits_and_a_restart_reprocesses_nothing(kafka_broker, trained, tmp_path):
    kafka_broker.create_topic("metrics", partitions=2)
    path, config = config_for(tmp_path, kafka_broker, trained, topic="metrics")
    first_part, second_part = STREAM[:2000], STREAM[2000:2600]
    produce(kafka_broker.bootstrap, "metrics", keyed(first_part))
    first = DaemonProcess(path, config, tmp_path / "run1.log").start()
    try:
        wait_until(lambda: first.metric("sentinel_samples_total") == len(first_part), 60,
                   lambda: f"the first part consumed; log:\n{first.log_tail()}")
        first.signal(signal.SIGTERM)
        started = time.monotonic()
        assert first.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        first.kill()
    assert committed_offsets(kafka_broker.bootstrap, "metrics", "sentinel") == end_offsets(
        kafka_broker.bootstrap, "metrics", len(first_part))

    produce(kafka_broker.bootstrap, "metrics", keyed(second_part))
    second = DaemonProcess(path, config, tmp_path / "run2.log").start()
    try:
        wait_until(lambda: second.metric("sentinel_samples_total") == len(second_part), 60,
                   lambda: f"the second part consumed; log:\n{second.log_tail()}")
        time.sleep(1.0)  # anything re-read would be counted by now
        assert second.metric("sentinel_samples_total") == len(second_part)
        assert second.metric("sentinel_warmup_records_total") > 0
    finally:
        second.signal(signal.SIGTERM)
        second.wait(10)
        second.kill()
    assert committed_offsets(kafka_broker.bootstrap, "metrics", "sentinel") == end_offsets(
        kafka_broker.bootstrap, "metrics", len(first_part) + len(second_part))


# --- more lifecycle, against the real broker -------------------------------------------------------

@pytest.mark.slow
def test_without_a_model_it_consumes_but_is_not_ready(kafka_broker, trained, tmp_path):
    kafka_broker.create_topic("metrics", partitions=1)
    _, config = write_config(tmp_path / "c.yaml", bootstrap=kafka_broker.bootstrap,
                             topic="metrics", model_dir=tmp_path / "no-model-yet",
                             state_dir=tmp_path / "state", threshold=0.5)
    produced = produce(kafka_broker.bootstrap, "metrics", keyed(STREAM[:500]))
    daemon = InProcessDaemon(config).start()
    try:
        wait_until(lambda: daemon.metric("sentinel_samples_total") == produced, 30, "consumption")
        ready = readiness(config.metrics.port)
        assert ready["code"] == 503 and ready["failing"] == ["model"]
        scraped = scrape(config.metrics.port)
        assert not scraped.labels("sentinel_failure_risk", "service")
        assert not scraped.labels("sentinel_model_info", "version")
    finally:
        assert daemon.stop() == 0


@pytest.mark.slow
def test_a_corrupt_model_stops_start_up_with_exit_2(trained, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(trained[0], model_dir)
    with (model_dir / "model.weights.h5").open("r+b") as weights:
        weights.seek(100)
        weights.write(b"garbage")
    path, _ = write_config(tmp_path / "c.yaml", bootstrap="127.0.0.1:9", topic="metrics",
                           model_dir=model_dir, state_dir=tmp_path / "state", threshold=0.5)

    assert main(["run", "--config", str(path)]) == 2
    assert "checksum of model.weights.h5 does not match" in capsys.readouterr().err


@pytest.mark.slow
def test_a_broker_outage_fails_readiness_and_the_daemon_rides_it_out(kafka_broker, trained,
                                                                     tmp_path):
    kafka_broker.create_topic("metrics", partitions=1)
    _, config = config_for(tmp_path, kafka_broker, trained, topic="metrics")
    produce(kafka_broker.bootstrap, "metrics", keyed(STREAM[:300]))
    daemon = InProcessDaemon(config).start()
    port = config.metrics.port
    try:
        wait_until(lambda: readiness(port)["code"] == 200, 30, "readiness")
        kafka_broker.stop()
        wait_until(lambda: readiness(port)["failing"] == ["broker"], 30, "the broker check failing")
        assert http_get(port, "/healthz")[0] == 200
        assert daemon.thread.is_alive()
        kafka_broker.start()  # tansu keeps nothing in memory: a fresh, empty broker
        kafka_broker.create_topic("metrics", partitions=1)
        produced = produce(kafka_broker.bootstrap, "metrics", keyed(STREAM[300:600]))
        wait_until(lambda: daemon.metric("sentinel_samples_total") >= 300 + produced, 60,
                   "consumption after the outage")
        wait_until(lambda: readiness(port)["code"] == 200, 30, "readiness after the outage")
        assert daemon.metric("sentinel_kafka_errors_total") > 0
    finally:
        assert daemon.stop() == 0


def test_dead_letters_wait_for_a_broker_and_then_land_with_their_origin(tmp_path):
    broker = TansuBroker(log_dir=tmp_path)  # not started yet: its port refuses connections
    letters = DeadLetters((broker.bootstrap,), "metrics.dlq", "metrics")
    letters.send(Record(3, 41, b"cart", b"{oops", False), "malformed_json", "Expecting value")
    letters.send(Record(3, 42, None, None, False), "malformed_json", "empty message")
    try:
        assert letters.flush(timeout_seconds=2) is False
        assert letters.pending == 2
        broker.start()
        broker.create_topic("metrics.dlq")
        assert letters.flush()
        assert letters.pending == 0
        landed = consume_all(broker.bootstrap, "metrics.dlq", 2)
    finally:
        letters.close()
        broker.stop()
    assert [(r.key, r.value) for r in landed] == [(b"cart", b"{oops"), (None, b"")]
    headers = dict(landed[0].headers)
    assert headers["sentinel-reason"] == b"malformed_json"
    assert headers["sentinel-detail"] == b"Expecting value"
    assert (headers["sentinel-origin-topic"], headers["sentinel-origin-partition"],
            headers["sentinel-origin-offset"]) == (b"metrics", b"3", b"41")
    assert json.loads(headers["sentinel-origin"]) == {"topic": "metrics", "partition": 3,
                                                      "offset": 41}


def test_adopted_alerts_are_resent_to_alertmanager_until_forgotten(tmp_path):
    """After a rebalance the new owner adopts the firing episodes it rebuilt (its Alertmanager
    sink re-sends them) and the old owner forgets them (it stops re-sending)."""
    config = AlertingConfig(webhooks=(WebhookConfig("http://127.0.0.1:9/alerts"),),
                            alertmanager=AlertmanagerConfig("http://127.0.0.1:9"))
    notifier = Notifier(config, tmp_path, registry=CollectorRegistry())  # not started
    firing_file = tmp_path / "outbox" / "alertmanager-firing.json"

    def firing() -> list[str]:
        return [t["service"] for t in json.loads(firing_file.read_text())["firing"]]

    notifier.adopt(AlertTransition("cart", "firing", T0, 0.9, T0))
    notifier.adopt(AlertTransition("search", "firing", T0, 0.8, T0))
    assert firing() == ["cart", "search"]
    assert len(notifier.outbox) == 0  # nothing is delivered again
    notifier.forget(["cart"])
    assert firing() == ["search"]


def test_a_poll_is_scored_published_and_committed_after_the_alerts_are_queued():
    loop = make_loop(risk=0.9)
    loop.feed(*(rec(i) for i in range(5)))

    # 5 samples close 4 buckets: 2 full windows of 3 steps, the first one fires
    assert [(t.service, t.state, t.ts) for t in loop.notifier.submitted] == [
        ("cart", "firing", T0 + 20)]
    assert loop.metric("sentinel_failure_risk", service="cart") == 0.9
    assert loop.metric("sentinel_scoring_batch_size_sum") == 2
    assert loop.metric("sentinel_alerts_total", state="firing") == 1
    assert loop.metric("sentinel_alerts_firing") == 1
    assert loop.source.committed == {0: 5}
    assert loop.metric("sentinel_samples_total") == 5


def test_warm_up_rebuilds_the_alert_state_without_sending_its_alerts_again():
    loop = make_loop(risk=0.9)
    loop.feed(*(rec(i, warmup=True) for i in range(5)), rec(5), rec(6))

    assert loop.notifier.submitted == []  # the firing happened in the warm-up: sent before
    assert [(t.state, t.ts) for t in loop.notifier.adopted] == [("firing", T0 + 20)]
    assert loop.metric("sentinel_alerts_firing") == 1
    assert loop.metric("sentinel_samples_total") == 2
    assert loop.metric("sentinel_warmup_records_total") == 5
    assert loop.source.committed == {0: 7}


def test_a_poll_of_warm_up_records_commits_nothing_below_the_committed_offset():
    # warm-up re-reads what was committed before (offsets 0-4 of a partition committed at 5):
    # committing them again would move the group's offset backwards, and a crash then would
    # replay more than the warm-up (seen as "a committed offset went backwards" under load)
    loop = make_loop()
    loop.source.committed = {0: 5}
    loop.feed(*(rec(i, warmup=True) for i in range(3)))
    assert loop.source.committed == {0: 5}
    loop.feed(*(rec(i, warmup=True) for i in range(3, 5)), rec(5))
    assert loop.source.committed == {0: 6}


def test_late_samples_are_counted_not_scored():
    loop = make_loop()
    loop.feed(rec(0, step=0), rec(1, step=5), rec(2, step=1))

    assert loop.metric("sentinel_samples_late_total") == 1
    assert loop.metric("sentinel_samples_outcome_total", outcome="late") == 1
    assert loop.metric("sentinel_samples_outcome_total", outcome="accepted") == 2


def test_rejected_records_are_counted_and_dead_lettered_and_wait_for_the_acknowledgement():
    loop = make_loop()
    loop.dead_letters.acknowledged = False
    loop.feed(rec(0), rec(1, value=b"{oops"), rec(2, value=None), rec(3))

    assert loop.dead_letters.sent == [(1, "malformed_json"), (2, "malformed_json")]
    assert loop.metric("sentinel_samples_rejected_total", reason="malformed_json") == 2
    assert loop.metric("sentinel_samples_outcome_total", outcome="rejected") == 2
    assert loop.source.committed == {}  # the letters are not safe yet
    loop.dead_letters.acknowledged = True
    loop.feed(rec(4))
    assert loop.source.committed == {0: 5}


def test_an_outbox_that_cannot_be_written_stops_the_loop_before_the_commit():
    loop = make_loop(FakeNotifier(OutboxError("disk full")), risk=0.9)
    loop.source.polls.append([rec(i) for i in range(5)])

    with pytest.raises(OutboxError):
        loop.daemon.run_once()
    assert loop.source.committed == {}


def test_a_silent_service_is_no_data_and_its_stale_risk_is_withdrawn():
    loop = make_loop()
    loop.feed(*(rec(i) for i in range(5)))
    assert loop.metric("sentinel_failure_risk", service="cart") == 0.1

    loop.clock.advance(61)
    loop.feed()
    assert loop.metric("sentinel_service_no_data", service="cart") == 1
    assert loop.metric("sentinel_failure_risk", service="cart") is None

    loop.feed(rec(5))
    assert loop.metric("sentinel_service_no_data", service="cart") == 0


def test_beyond_max_services_newcomers_are_evicted_first_then_the_longest_idle():
    loop = make_loop()
    loop.feed(*(rec(i, "cart", step=i) for i in range(5)))
    loop.clock.advance(1)
    loop.feed(*(rec(5 + i, "checkout", step=i) for i in range(5)))
    loop.clock.advance(1)
    loop.feed(rec(10, "search", step=0))  # less than a window: a newcomer goes first

    assert loop.metric("sentinel_services_evicted_total") == 1
    assert loop.metric("sentinel_services_tracked") == 2
    assert "search" not in loop.daemon.pipeline.windows
    assert loop.metric("sentinel_failure_risk", service="cart") == 0.1

    loop.clock.advance(1)
    loop.feed(*(rec(11 + i, "search", step=i) for i in range(5)))  # established too now
    assert loop.metric("sentinel_services_evicted_total") == 2
    assert loop.metric("sentinel_failure_risk", service="cart") is None  # the longest idle
    assert "cart" not in loop.daemon.pipeline.windows
    assert "checkout" in loop.daemon.pipeline.windows


def test_a_revoked_partition_takes_its_services_state_along():
    loop = make_loop()
    loop.feed(*(rec(i, "cart", step=i, partition=0) for i in range(5)),
              *(rec(i, "checkout", step=i, partition=1) for i in range(5)))

    loop.source.on_revoked([1])  # what KafkaSource does inside poll()

    assert loop.notifier.forgotten == ["checkout"]
    assert "checkout" not in loop.daemon.pipeline.windows
    assert loop.metric("sentinel_failure_risk", service="checkout") is None
    assert loop.metric("sentinel_failure_risk", service="cart") == 0.1
    assert loop.metric("sentinel_services_tracked") == 2  # updated by the next poll
    loop.feed()
    assert loop.metric("sentinel_services_tracked") == 1


def test_broker_trouble_fails_readiness_but_not_liveness():
    loop = make_loop()
    loop.feed()
    assert loop.daemon.health.readiness()[0]

    loop.source.lag_error = KafkaUnavailable("end offsets lookup failed: timed out")
    loop.clock.advance(5)
    loop.feed()
    ready, body = loop.daemon.health.readiness()
    assert not ready and body["failing"] == ["broker"]
    assert loop.daemon.health.liveness()[0]
    assert loop.metric("sentinel_kafka_errors_total") == 1


def test_health_endpoints_answer_json_and_serve_the_registry():
    clock, registry = FakeClock(), CollectorRegistry()
    Telemetry(registry).samples.inc(3)
    state = HealthState(30.0, clock)
    state.set_check("model", True, "version x")
    server = HealthServer("127.0.0.1", 0, registry, state).start()
    try:
        status, body = http_get(server.port, "/readyz")
        assert status == 503
        assert json.loads(body)["failing"] == ["partitions", "broker"]
        state.progressed()
        assert http_get(server.port, "/healthz")[0] == 200
        clock.advance(31)
        status, body = http_get(server.port, "/healthz")
        assert status == 503 and json.loads(body)["status"] == "stalled"
        assert Scrape(http_get(server.port, "/metrics")[1].decode()).get(
            "sentinel_samples_total") == 3
        assert http_get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


def test_the_risk_series_is_written_as_prometheus_client_would_write_it():
    """/metrics writes sentinel_failure_risk itself (it is 100,000 series at scale): the same
    lines as generate_latest, label values escaped, numpy floats and odd values included."""
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    telemetry.samples.inc(2)
    odd_names = ['quo"te', "back\\slash", "new\nline", "ünï ☃", "cart"]
    for i, (service, risk) in enumerate(zip(odd_names, [0.25, 1.0, 0.0, 1e-7, 0.5], strict=True)):
        telemetry.set_risk(service, np.float64(risk) if i % 2 else risk)
    telemetry.set_risk("outside", 2e9)  # never from the model; still formatted like Go
    fast, reference = exposition(registry), generate_latest(registry)
    assert sorted(fast.splitlines()) == sorted(reference.splitlines())
    assert b'sentinel_failure_risk{service="quo\\"te"} 0.25' in fast
    assert b'sentinel_failure_risk{service="new\\nline"} 0.0' in fast
    assert fast.count(b"# TYPE sentinel_failure_risk gauge") == 1
    assert registry.get_sample_value("sentinel_failure_risk", {"service": "cart"}) == 0.5
    telemetry.forget_services([*odd_names, "outside"])
    assert b"sentinel_failure_risk{" not in exposition(registry)


class _RisingQps:
    """Risk = how much qps rose over the window (so qps is the driver when it rises)."""

    def score(self, windows: np.ndarray) -> np.ndarray:
        return np.clip((windows[:, -1, 0] - windows[:, 0, 0]) / 100.0, 0.0, 1.0)


def test_the_loop_shows_drivers_while_firing_refreshes_them_and_removes_them_at_resolve() -> None:
    loop = make_loop()
    loop.daemon.pipeline.model = _RisingQps()
    qps = [100, 100, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1100, 1100, 1100]

    def sample(offset: int) -> bytes:
        return json.dumps({"service": "cart", "ts": T0 + 10 * offset,
                           "metrics": {"qps": float(qps[offset])}}).encode()

    def drivers() -> dict[tuple[str, str], float]:
        return {(s.labels["rank"], s.labels["metric"]): s.value
                for family in loop.registry.collect() if family.name == "sentinel_alert_driver"
                for s in family.samples if s.labels.get("service") == "cart"}

    for offset in range(6):
        loop.feed(rec(offset, value=sample(offset)))
    [firing] = loop.notifier.submitted
    assert firing.state == "firing" and firing.drivers[0].metric == "qps"
    assert drivers() == {("1", "qps"): pytest.approx(firing.drivers[0].contribution)}
    for offset in range(6, 13):
        loop.feed(rec(offset, value=sample(offset)))
    assert loop.notifier.refreshed, "re-explained drivers_refresh (60 s) after the firing"
    assert all(t.started_ts == firing.ts and t.ts == firing.ts + 60
               for t in loop.notifier.refreshed)
    for offset in range(13, len(qps)):
        loop.feed(rec(offset, value=sample(offset)))
    assert [t.state for t in loop.notifier.submitted] == ["firing", "resolved"]
    assert drivers() == {}, "no driver series once the alert resolved"
