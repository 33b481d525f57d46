"""Faults injected into a running `sentinel run`: the broker, the process, the group, the disk.

Each test injects one fault against the real tansu broker and real HTTP servers on loopback,
asserts what must hold (nothing lost, nothing fatal, the right probe answers) and prints the
figure it measured (`pytest -s tests/faults/test_reliability.py` shows them; RELIABILITY.md collects
them). Times are reported, never asserted tightly: the CI machine is small and shared.

Random fault points are seeded: SENTINEL_FAULT_SEED=<n> replays another sequence.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.testkit.daemon import (
    STREAM,
    DaemonProcess,
    InProcessDaemon,
    committed_offsets,
    config_for,
    expected,
    http_get,
    keyed,
    produce,
    readiness,
)
from tests.testkit.wait import wait_until

SEED = int(os.environ.get("SENTINEL_FAULT_SEED", "6"))
OUTAGE_SECONDS = float(os.environ.get("SENTINEL_OUTAGE_SECONDS", "30"))
KILLS = int(os.environ.get("SENTINEL_KILLS", "10"))


def report(test: str, **figures: object) -> None:
    """One line per test, `pytest -s` shows it: the figures RELIABILITY.md quotes."""
    print(f"\nRELIABILITY {test}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


class Probes:
    """Polls /healthz and /readyz in the background; remembers every answer."""

    def __init__(self, port: int, every_seconds: float = 0.25) -> None:
        self.port, self.every_seconds = port, every_seconds
        self.healthz: list[tuple[float, int | None]] = []
        self.readyz: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            now = time.monotonic()
            try:
                self.healthz.append((now, http_get(self.port, "/healthz")[0]))
            except OSError:
                self.healthz.append((now, None))
            self.readyz.append((now, readiness(self.port)["code"]))


def outcomes(scraped) -> float:
    """Live records counted by fate: accepted + late + rejected."""
    return sum(scraped.get("sentinel_samples_outcome_total", outcome=o)
               for o in ("accepted", "late", "rejected"))


def all_lag_zero(scraped, partitions: int) -> bool:
    lags = scraped.labels("sentinel_consumer_lag", "partition")
    return (lags == {str(p) for p in range(partitions)}
            and not any(scraped.get("sentinel_consumer_lag", partition=str(p))
                        for p in range(partitions)))


# --- broker outage ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_30s_broker_outage_mid_stream_loses_no_sample_and_the_daemon_recovers(
        kafka_broker, trained, tmp_path):
    """Tansu keeps its log in memory only (no persistent engine in this build), so the
    restarted broker is empty: the rest of the stream is produced after it is back, as
    producers that buffered during the outage would."""
    kafka_broker.create_topic("metrics", partitions=2)
    path, config = config_for(tmp_path, kafka_broker, trained, topic="metrics")
    cut = len(STREAM) // 2
    before = produce(kafka_broker.bootstrap, "metrics", keyed(STREAM[:cut]))
    daemon = DaemonProcess(path, config, tmp_path / "run.log").start()
    try:
        daemon.wait_ready(60)
        wait_until(lambda: (s := daemon.scrape()) and outcomes(s) == before
                   and all_lag_zero(s, 2), 60, "the first half consumed")
        with Probes(daemon.port) as probes:
            kafka_broker.stop()
            down_at = time.monotonic()
            wait_until(lambda: daemon.readiness()["failing"] == ["broker"], OUTAGE_SECONDS,
                       "/readyz failing on the broker")
            noticed_seconds = time.monotonic() - down_at
            while time.monotonic() < down_at + OUTAGE_SECONDS:
                daemon.check_alive()
                time.sleep(0.5)
            kafka_broker.start()
            up_at = time.monotonic()
            kafka_broker.create_topic("metrics", partitions=2)
            after = produce(kafka_broker.bootstrap, "metrics", keyed(STREAM[cut:]))
            wait_until(lambda: daemon.readiness()["code"] == 200
                       and (s := daemon.scrape()) and outcomes(s) >= before + after
                       and all_lag_zero(s, 2), 120,
                       lambda: f"recovery; log:\n{daemon.log_tail()}", 0.2)
            recovery_seconds = time.monotonic() - up_at
            time.sleep(1.0)  # a few more probes after the recovery
        scraped = daemon.scrape()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        daemon.kill()
    during = [code for t, code in probes.readyz if down_at + noticed_seconds <= t < up_at]
    assert during and set(during) == {503}
    assert probes.readyz[-1][1] == 200
    assert {code for _, code in probes.healthz} == {200}  # liveness never failed
    # produced = counted (accepted + late + rejected), plus what was read twice: the records
    # fetched just before the group noticed the restarted broker forgot it, whose commit
    # then failed (at-least-once: at most one poll per partition)
    reread = outcomes(scraped) - len(STREAM)
    assert before + after == len(STREAM)
    assert 0 <= reread <= 2 * config.kafka.max_poll_records
    assert scraped.get("sentinel_kafka_errors_total") > 0
    scored_after = {e["service"] for e in daemon.events("score")
                    if e["live"] and e["event_ts"] > STREAM[cut]["ts"]}
    assert scored_after == {s["service"] for s in STREAM}
    report("broker_outage", outage_s=OUTAGE_SECONDS, readyz_failed_after_s=round(noticed_seconds, 1),
           recovery_s=round(recovery_seconds, 1), produced=len(STREAM),
           counted=int(outcomes(scraped)), reread=int(reread),
           commit_failures=int(scraped.get("sentinel_commit_failures_total")),
           healthz_probes=len(probes.healthz),
           healthz_failures=sum(code != 200 for _, code in probes.healthz),
           kafka_errors=int(scraped.get("sentinel_kafka_errors_total")))


# --- SIGKILL at random points ----------------------------------------------------------------

class PacedProducer:
    """Produces `samples` in order, `per_second` of them a second, on a thread."""

    def __init__(self, bootstrap: str, topic: str, samples: list[dict], per_second: float,
                 chunk: int = 25) -> None:
        self.messages = keyed(samples)
        self.bootstrap, self.topic, self.per_second, self.chunk = (
            bootstrap, topic, per_second, chunk)
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PacedProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        try:
            started = time.monotonic()
            while self.sent < len(self.messages) and not self._stop.is_set():
                for key, value in self.messages[self.sent:self.sent + self.chunk]:
                    producer.send(self.topic, key=key, value=value)
                producer.flush()
                self.sent = min(len(self.messages), self.sent + self.chunk)
                self._stop.wait(max(0.0, started + self.sent / self.per_second
                                    - time.monotonic()))
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            producer.close()

    @property
    def done(self) -> bool:
        return self.sent == len(self.messages)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def consuming(run: DaemonProcess, producer: PacedProducer):
    """A run has processed a poll (or, with nothing left to produce, is ready)."""
    def check() -> bool:
        run.check_alive()
        return bool(run.events("batch")) or (producer.done and run.readiness()["code"] == 200)
    return check


@pytest.mark.slow
def test_sigkill_at_random_points_skips_no_offset_and_loses_no_alert(kafka_broker, trained,
                                                                   tmp_path, receiver):
    kafka_broker.create_topic("metrics", partitions=1)
    batch = 100
    path, config = config_for(tmp_path, kafka_broker, trained, topic="metrics",
                              webhook_port=receiver.port, kafka={"max_poll_records": batch})
    want = expected(config, trained[0], STREAM)
    rng = random.Random(SEED)
    producer = PacedProducer(kafka_broker.bootstrap, "metrics", STREAM, per_second=120).start()
    committed = 0
    kills: list[dict] = []
    try:
        for k in range(KILLS):
            run = DaemonProcess(path, config, tmp_path / f"run{k}.log").start()
            try:
                wait_until(consuming(run, producer), 90, run.log_tail, 0.1)
                time.sleep(rng.uniform(0.0, 2.5))
            finally:
                run.kill()
            processed = sum(b["samples"] for b in run.events("batch"))  # logged before commit
            now_committed = committed_offsets(kafka_broker.bootstrap, "metrics", "sentinel")[0]
            assert now_committed >= committed, "a committed offset went backwards"
            assert now_committed <= committed + processed, (
                f"kill {k}: committed {now_committed} but only offsets < "
                f"{committed + processed} were processed")
            reread = committed + processed - now_committed
            assert reread <= batch, f"kill {k}: {reread} records to process again"
            kills.append({"committed": now_committed, "processed": processed, "reread": reread})
            committed = now_committed
        wait_until(lambda: producer.done, 120, "the producer done")
        assert producer.error is None
        last = DaemonProcess(path, config, tmp_path / "last.log").start()
        try:
            wait_until(lambda: (s := last.scrape()) and all_lag_zero(s, 1)
                       and outcomes(s) == len(STREAM) - committed, 90,
                       lambda: f"the rest consumed; log:\n{last.log_tail()}", 0.2)
            wait_until(lambda: want.keys <= receiver.keys(), 30,
                       lambda: f"deliveries; missing {sorted(want.keys - receiver.keys())}")
            last.signal(signal.SIGTERM)
            assert last.wait(15) == 0
        finally:
            last.kill()
    finally:
        producer.stop()
    assert committed_offsets(kafka_broker.bootstrap, "metrics", "sentinel")[0] == len(STREAM)
    by_alert: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for request in receiver.received:
        by_alert[request.alert].add(request.key)
    assert all(len(keys) == 1 for keys in by_alert.values()), "a duplicate under another key"
    assert receiver.keys() == want.keys  # no resolve of an episode nobody heard of
    duplicates = len(receiver.received) - len(receiver.keys())
    # episodes that outlived a restart's plain rebuild range (rebuild_messages before the
    # committed offset): known after the restart only thanks to sentinel.daemon.rebuild_hints
    runs = [tmp_path / f"run{k}.log" for k in range(KILLS)] + [tmp_path / "last.log"]
    long_episodes = episodes_spanning_a_rebuild(want, runs, config.kafka.rebuild_messages)
    report("sigkill", kills=KILLS, seed=SEED, expected_transitions=len(want.transitions),
           deliveries=len(receiver.received), duplicates=duplicates,
           duplicates_per_kill=round(duplicates / KILLS, 2),
           reread_per_kill=[k["reread"] for k in kills],
           max_reread=max(k["reread"] for k in kills), max_poll_records=batch,
           episodes_older_than_rebuild_messages=len(long_episodes))


def episodes_spanning_a_rebuild(want, run_logs: list[Path], rebuild_messages: int) -> set[str]:
    """Resolve keys of the episodes that fired more than `rebuild_messages` before a
    restart's live start and resolved after it (one partition: offset = index in STREAM)."""
    rebuilds = []
    for log in run_logs:
        for line in log.read_text(errors="replace").splitlines():
            if "rebuilding from offset" in line:
                live = int(json.loads(line)["msg"].split()[-1])
                rebuilds.append((live - rebuild_messages, live))
    offset_of = {(s["service"], int(s["ts"]) // 10 * 10): i for i, s in enumerate(STREAM)}
    firing = {t.episode_key: t for t in want.transitions if t.state == "firing"}
    out = set()
    for t in want.transitions:
        if t.state != "resolved" or t.episode_key not in firing:
            continue
        fired_at = offset_of.get((t.service, firing[t.episode_key].ts), 0)
        resolved_at = offset_of.get((t.service, t.ts), len(STREAM))
        if any(fired_at < start and resolved_at >= live for start, live in rebuilds):
            out.add(f"{t.episode_key}-resolved")
    return out


# --- disk faults -----------------------------------------------------------------------------

def test_a_late_bucket_for_an_older_hour_is_written_not_refused_with_a_closed_descriptor(
        tmp_path):
    """Found by the broker-outage test: with two partitions consumed at different paces, a
    poll can close a bucket of an hour older than the two segments kept open; opening its
    segment closed the descriptor just opened (EBADF) and the history lost those lines."""
    from prometheus_client import CollectorRegistry

    from sentinel.daemon.history_store import OPEN_SEGMENTS
    from sentinel.training.history import read_series
    from tests.testkit.history import T0, store_at, synthetic

    metrics = CollectorRegistry()
    store = store_at(tmp_path / "history", metrics)
    hours = list(range(OPEN_SEGMENTS + 1))
    for hour in reversed(hours):  # the newest hours first, then an older one
        assert store.append([synthetic("cart", T0 + hour * 3600 + 10 * i) for i in range(3)]) == 3
        assert store.problem is None
    assert (metrics.get_sample_value("sentinel_history_write_errors_total") or 0) == 0
    store.close()
    assert read_series([tmp_path / "history"], store_config())[1].samples == 3 * len(hours)


def store_config():
    from tests.testkit.history import CONFIG
    return CONFIG


# --- rebalance churn -------------------------------------------------------------------------

def owned_partitions(daemon: DaemonProcess) -> list[int]:
    ready = daemon.readiness()
    if ready["code"] != 200:
        return []
    return json.loads(ready["checks"]["partitions"]["detail"].removeprefix("assigned "))


def settled(live: list[DaemonProcess], partitions: int) -> list[list[int]]:
    """Waits until the live replicas own every partition exactly once, each at least one,
    for 1 s in a row (a joining replica may be left out of one round and join the next)."""
    history: list[tuple[float, list[list[int]]]] = []

    def check() -> list[list[int]] | None:
        owned = [owned_partitions(d) for d in live]
        now = time.monotonic()
        history.append((now, owned))
        flat = sorted(p for o in owned for p in o)
        recent = [o for t, o in history if t > now - 1.0]
        if (flat == list(range(partitions)) and all(owned) and history[0][0] < now - 1.0
                and all(o == owned for o in recent)):
            return owned
        return None

    return wait_until(check, 60, "every partition owned by exactly one live replica", 0.2)


def live_scores(logs: list[DaemonProcess], after_ts: float) -> set[str]:
    return {e["service"] for d in logs for e in d.events("score")
            if e["live"] and e["event_ts"] > after_ts}


@pytest.mark.slow
def test_a_second_replica_joining_and_leaving_strands_no_partition_and_loses_nothing(
        kafka_broker, trained, tmp_path):
    from sentinel.sim import simulate

    kafka_broker.create_topic("metrics", partitions=4)
    samples = simulate.simulate(services=6, days=0.1, seed=3).samples
    names = {s["service"] for s in samples}
    path_a, config_a = config_for(tmp_path, kafka_broker, trained, name="a", topic="metrics")
    path_b, config_b = config_for(tmp_path, kafka_broker, trained, name="b", topic="metrics")
    a = DaemonProcess(path_a, config_a, tmp_path / "a.log").start()
    runs: list[DaemonProcess] = [a]
    producer = PacedProducer(kafka_broker.bootstrap, "metrics", samples, per_second=80).start()
    rebalances: list[dict] = []

    def after_rebalance(kind: str, live: list[DaemonProcess]) -> None:
        started = time.monotonic()
        owned = settled(live, 4)
        position = samples[max(0, producer.sent - 1)]["ts"]
        wait_until(lambda: live_scores(runs, position) == names or producer.done, 60,
                   lambda: f"every service scored after {kind}; "
                           f"missing {names - live_scores(runs, position)}", 0.3)
        rebalances.append({"kind": kind, "owned": owned,
                           "settled_s": round(time.monotonic() - started, 1)})

    try:
        a.wait_ready(60)
        after_rebalance("start", [a])
        for cycle, leave in enumerate((signal.SIGTERM, signal.SIGKILL, signal.SIGTERM)):
            b = DaemonProcess(path_b, config_b, tmp_path / f"b{cycle}.log").start()
            runs.append(b)
            b.wait_ready(60)  # it owns a partition
            after_rebalance("join", [a, b])
            b.signal(leave)
            b.wait(15)
            after_rebalance(f"leave by {signal.Signals(leave).name}", [a])
        wait_until(lambda: producer.done, 120, "the producer done")
        wait_until(lambda: (s := a.scrape()) and all_lag_zero(s, 4), 60, "lag 0")
        wait_until(lambda: sum(committed_offsets(kafka_broker.bootstrap, "metrics",
                                                 "sentinel").values()) == len(samples), 30,
                   "everything committed")
    finally:
        producer.stop()
        for run in runs:
            run.kill()
    assert producer.error is None
    want = expected(config_a, trained[0], samples)
    scored = {(e["service"], e["event_ts"]) for d in runs for e in d.events("score")}
    assert want.scored <= scored, f"{len(want.scored - scored)} windows never scored"
    report("rebalance_churn", rebalances=len(rebalances) - 1,
           settle_s=[r["settled_s"] for r in rebalances[1:]],
           windows_expected=len(want.scored), windows_missed=len(want.scored - scored))


# --- stalls longer than the group's patience -------------------------------------------------

STALL_KAFKA = {"max_poll_records": 200, "max_poll_interval": "3s"}


@pytest.mark.slow
def test_scoring_stalled_past_max_poll_interval_rejoins_counts_the_failed_commit_and_carries_on(
        kafka_broker, trained, tmp_path):
    """The scoring step of one poll takes longer than kafka.max_poll_interval (a slowed
    `Pipeline.process`, injected by the test into the real App): the consumer is out of the
    group when it commits."""
    kafka_broker.create_topic("metrics", partitions=1)
    _, config = config_for(tmp_path, kafka_broker, trained, topic="metrics", kafka=STALL_KAFKA)
    produced = produce(kafka_broker.bootstrap, "metrics", keyed(STREAM[:3000]))
    daemon = InProcessDaemon(config)
    pipeline = daemon.app.daemon.pipeline
    original, calls, stall_seconds = pipeline.process, [0], 6.0

    def slow_once(samples):
        calls[0] += 1
        if calls[0] == 4:
            time.sleep(stall_seconds)
        return original(samples)

    pipeline.process = slow_once
    daemon.start()
    try:
        wait_until(lambda: calls[0] > 4, 60, "the stalled poll")
        resumed = time.monotonic()
        wait_until(lambda: daemon.metric("sentinel_commit_failures_total") >= 1, 30,
                   "the failed commit counted")
        wait_until(lambda: committed_offsets(kafka_broker.bootstrap, "metrics", "sentinel")[0]
                   == produced and readiness(config.metrics.port)["code"] == 200, 60,
                   "everything committed after rejoining", 0.2)
        recovered_seconds = time.monotonic() - resumed
        assert daemon.thread.is_alive()
        counted = sum(daemon.metric("sentinel_samples_outcome_total", outcome=o)
                      for o in ("accepted", "late", "rejected"))
    finally:
        assert daemon.stop() == 0
    reread = counted - produced
    assert 0 <= reread <= STALL_KAFKA["max_poll_records"]
    report("stalled_scoring", stall_s=stall_seconds, max_poll_interval_s=3,
           commit_failures=int(daemon.metric("sentinel_commit_failures_total")),
           reread=int(reread), recovered_s=round(recovered_seconds, 1))


@pytest.mark.slow
def test_a_sigstopped_daemon_is_dropped_from_the_group_and_carries_on_after_sigcont(
        kafka_broker, trained, tmp_path):
    """The whole process frozen (SIGSTOP) longer than the session timeout and
    max_poll_interval, heartbeat thread included, while the stream keeps coming."""
    kafka_broker.create_topic("metrics", partitions=1)
    path, config = config_for(tmp_path, kafka_broker, trained, topic="metrics",
                              kafka=STALL_KAFKA)
    samples = STREAM[:3000]
    daemon = DaemonProcess(path, config, tmp_path / "run.log").start()
    producer = PacedProducer(kafka_broker.bootstrap, "metrics", samples, per_second=300).start()
    stop_seconds = 8.0
    try:
        daemon.wait_ready(60)
        wait_until(lambda: daemon.metric("sentinel_samples_total") > 0, 30, "consuming")
        daemon.signal(signal.SIGSTOP)
        time.sleep(stop_seconds)
        daemon.signal(signal.SIGCONT)
        resumed = time.monotonic()
        wait_until(lambda: producer.done, 60, "the producer done")
        wait_until(lambda: committed_offsets(kafka_broker.bootstrap, "metrics", "sentinel")[0]
                   == len(samples) and daemon.readiness()["code"] == 200, 60,
                   lambda: f"everything committed; log:\n{daemon.log_tail()}", 0.2)
        recovered_seconds = time.monotonic() - resumed
        scraped = daemon.scrape()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        if daemon.process.poll() is None:
            daemon.signal(signal.SIGCONT)
        producer.stop()
        daemon.kill()
    assert producer.error is None
    reread = outcomes(scraped) - len(samples)
    assert 0 <= reread <= STALL_KAFKA["max_poll_records"]
    log = daemon.log_tail(100_000)
    assert "Heartbeat session expired" in log  # the client saw the stall
    # Apache Kafka evicts the frozen member and the consumer rejoins (the stalled-scoring test
    # shows that path); tansu 0.6 keeps it in the group, so there may be no rebalance here
    assignments = log.count("partitions [0] assigned")
    report("sigstop", stopped_s=stop_seconds, session_timeout_s=2, max_poll_interval_s=3,
           assignments=assignments,
           commit_failures=int(scraped.get("sentinel_commit_failures_total")),
           reread=int(reread), recovered_s=round(recovered_seconds, 1))


def test_while_an_alert_is_only_in_memory_scoring_goes_on_and_offsets_wait():
    """The outbox could not write an alert (the Notifier keeps it in memory and delivers
    it): the daemon scores on, shows the outbox as degraded, and commits nothing until the
    alert is delivered, so that a crash meanwhile re-reads the records and queues it again."""
    from tests.testkit.loop import FakeNotifier, make_loop, rec

    notifier = FakeNotifier()
    notifier.in_memory, notifier.problem = 1, "cannot write to the alert outbox: disk full"
    loop = make_loop(notifier, risk=0.9)
    loop.feed(*(rec(i) for i in range(5)))

    assert [t.state for t in notifier.submitted] == ["firing"]
    assert loop.metric("sentinel_failure_risk", service="cart") == 0.9
    assert loop.source.committed == {}
    ready, body = loop.daemon.health.readiness()
    assert ready and body["status"] == "ready, degraded"
    assert body["degraded"] == {"outbox": "cannot write to the alert outbox: disk full"}

    notifier.in_memory, notifier.problem = 0, None  # delivered; the disk works again
    loop.feed(rec(5))
    assert loop.source.committed == {0: 6}
    assert loop.daemon.health.readiness()[1]["status"] == "ready"


def cut_after(ts: float) -> int:
    """The STREAM index past which `ts` is a minute old: its bucket has closed by then."""
    return next((i for i, s in enumerate(STREAM) if s["ts"] > ts + 60), len(STREAM))


class OutboxFault:
    """Makes <state>/outbox refuse writes. Unwritable: chmod 0500, which does not stop root
    (CI runs as root), so as root the directory is swapped for a plain file (ENOTDIR).
    Full: the next puts' temporary names are symlinks to /dev/full (ENOSPC on write)."""

    def __init__(self, outbox_dir: Path) -> None:
        self.dir = outbox_dir
        self.moved = outbox_dir.with_name("outbox.moved")
        self.method = ""

    def unwritable(self) -> None:
        if os.geteuid() != 0:
            self.dir.chmod(0o500)
            self.method = "chmod 0500"
        else:
            self.dir.rename(self.moved)
            self.dir.write_text("not a directory")
            self.method = "directory replaced by a file (root ignores chmod)"

    def full(self, next_seq: int, count: int = 200) -> None:
        for seq in range(next_seq, next_seq + count):
            (self.dir / f".{seq:020d}.json.tmp").symlink_to("/dev/full")

    def repair(self) -> None:
        if self.moved.exists():
            self.dir.unlink()
            self.moved.rename(self.dir)
        self.dir.chmod(0o755)
        for link in self.dir.glob(".*.tmp"):
            link.unlink()


@pytest.mark.slow
def test_an_unwritable_or_full_state_disk_degrades_readiness_and_scoring_and_alerts_go_on(
        kafka_broker, trained, tmp_path, receiver):
    kafka_broker.create_topic("metrics", partitions=1)
    _, config = config_for(tmp_path, kafka_broker, trained, topic="metrics",
                           webhook_port=receiver.port)
    want = expected(config, trained[0], STREAM)
    transitions = sorted(want.transitions, key=lambda t: t.ts)
    assert len(transitions) >= 7
    cuts = [0, cut_after(transitions[1].ts), cut_after(transitions[3].ts),
            cut_after(transitions[5].ts), len(STREAM)]
    daemon = InProcessDaemon(config).start()
    port, state = config.metrics.port, tmp_path / "sentinel-state"
    fault = OutboxFault(state / "outbox")
    history = daemon.app.history
    phases: list[dict] = []

    def phase(name: str, part: int) -> dict:
        produce(kafka_broker.bootstrap, "metrics", keyed(STREAM[cuts[part]:cuts[part + 1]]))
        keys = {f"{t.episode_key}-{t.state}" for t in transitions
                if cuts[part] <= cut_after(t.ts) - 1 < cuts[part + 1] and
                f"{t.episode_key}-{t.state}" in want.keys}
        wait_until(lambda: daemon.metric("sentinel_samples_total") == cuts[part + 1], 60,
                   f"phase {name} consumed (scoring goes on)")
        wait_until(lambda: keys <= receiver.keys(), 30, f"phase {name}'s alerts delivered")
        wait_until(lambda: committed_offsets(kafka_broker.bootstrap, "metrics", "sentinel")[0]
                   == cuts[part + 1], 30, f"phase {name} committed once delivered")
        ready = readiness(port)
        figures = {"phase": name, "alerts": len(keys), "ready": ready["code"],
                   "status": ready["status"], "degraded": sorted(ready["degraded"]),
                   "outbox_write_errors": daemon.metric("sentinel_outbox_write_errors_total"),
                   "history_write_errors": daemon.metric("sentinel_history_write_errors_total")}
        phases.append(figures)
        return figures

    try:
        wait_until(lambda: readiness(port)["code"] == 200, 30, "readiness")
        assert phase("healthy", 0)["status"] == "ready"

        fault.unwritable()
        for ts in range(int(STREAM[cuts[1]]["ts"]) // 3600 * 3600 + 3600,
                        int(STREAM[cuts[3]]["ts"]) + 3600, 3600):  # new hours: /dev/full
            (state / "history" / history.segment_name(ts)).symlink_to("/dev/full")
        unwritable = phase("outbox unwritable, history full", 1)
        assert unwritable["ready"] == 200 and unwritable["status"] == "ready, degraded"
        assert unwritable["degraded"] == ["history", "outbox"]
        assert unwritable["outbox_write_errors"] >= unwritable["alerts"] > 0

        fault.repair()
        fault.full(daemon.app.notifier.outbox._next_seq)
        full = phase("outbox full", 2)
        assert full["status"] == "ready, degraded" and "outbox" in full["degraded"]
        assert full["outbox_write_errors"] > unwritable["outbox_write_errors"]
        assert "No space left" in readiness(port)["degraded"]["outbox"]

        fault.repair()
        for link in (state / "history").iterdir():
            if link.is_symlink():
                link.unlink()
        repaired = phase("repaired", 3)
        assert repaired["status"] == "ready" and repaired["degraded"] == []
    finally:
        fault.repair()
        assert daemon.stop() == 0
    assert want.keys <= receiver.keys()  # every alert delivered, through every fault
    assert daemon.metric("sentinel_samples_total") == len(STREAM)
    report("disk_faults", method=fault.method, phases=phases)


# --- cardinality flood -----------------------------------------------------------------------

FLOOD_SERVICES = int(os.environ.get("SENTINEL_FLOOD_SERVICES", "100000"))


@pytest.mark.slow
def test_a_flood_of_unknown_services_stays_bounded_and_known_services_keep_being_scored(
        kafka_broker, trained, tmp_path):
    """FLOOD_SERVICES new service names, one sample each, all within one minute of event
    time, interleaved with the stream of three established services, through the broker."""
    kafka_broker.create_topic("metrics", partitions=2)
    max_services = 1000
    _, config = config_for(tmp_path, kafka_broker, trained, topic="metrics",
                           stream={"max_services": max_services})
    warm, during = 2000, 300  # known samples before and during the flood
    produce(kafka_broker.bootstrap, "metrics", keyed(STREAM[:warm]))
    daemon = InProcessDaemon(config).start()
    port = config.metrics.port
    try:
        wait_until(lambda: daemon.metric("sentinel_samples_total") == warm, 60, "warm-up")
        baseline_bytes = len(http_get(port, "/metrics")[1])
        t0 = STREAM[warm]["ts"]
        flood = [{"service": f"flood-{i:06d}", "ts": t0 + 60 * i / FLOOD_SERVICES,
                  "metrics": {"qps": 1.0, "p99_ms": 5.0, "error_rate": 0.0, "cpu": 0.1}}
                 for i in range(FLOOD_SERVICES)]
        per_known = FLOOD_SERVICES // during
        mixed = []
        for j, known in enumerate(STREAM[warm:warm + during]):
            mixed += [*flood[j * per_known:(j + 1) * per_known], known]
        mixed += flood[during * per_known:]
        sizes, tracked = [], []
        stop = threading.Event()

        def sample_metrics() -> None:
            while not stop.wait(0.5):
                sizes.append(len(http_get(port, "/metrics")[1]))
                tracked.append(daemon.metric("sentinel_services_tracked"))

        sampler = threading.Thread(target=sample_metrics, daemon=True)
        sampler.start()
        started = time.monotonic()
        total = warm + produce(kafka_broker.bootstrap, "metrics", keyed(mixed))
        wait_until(lambda: daemon.metric("sentinel_samples_total") == total, 240,
                   "the flood consumed", 0.5)
        flood_seconds = time.monotonic() - started
        stop.set()
        sampler.join(5)
        sizes.append(len(http_get(port, "/metrics")[1]))
        known = {s["service"] for s in STREAM}
        kept = {s for s in known if s in daemon.app.daemon.pipeline.windows}
        scored = daemon.metric("sentinel_scoring_batch_size_sum")
        evicted = daemon.metric("sentinel_services_evicted_total")
        rss = daemon.metric("process_resident_memory_bytes")
    finally:
        stop.set()
        assert daemon.stop() == 0
    want = expected(config, trained[0], STREAM[:warm + during])
    assert kept == known  # never evicted: their windows stayed
    assert scored == len(want.scored)  # every window of the known services, none of the flood
    assert max(tracked) <= max_services
    assert evicted >= FLOOD_SERVICES - max_services
    assert max(sizes) <= baseline_bytes + max_services * 200  # bounded by the cap, not the flood
    report("cardinality_flood", unknown_services=FLOOD_SERVICES, max_services=max_services,
           consumed_in_s=round(flood_seconds, 1),
           records_per_s=round((total - warm) / flood_seconds),
           max_tracked=int(max(tracked)), evicted=int(evicted),
           metrics_bytes_before=baseline_bytes, metrics_bytes_max=max(sizes),
           known_windows_scored=f"{int(scored)}/{len(want.scored)}",
           test_process_rss_mib=round(rss / 2**20))


# --- oversized messages ----------------------------------------------------------------------

OVERSIZED = {
    "valid JSON padded past the limit": lambda n: json.dumps(
        {"service": "cart", "ts": 1763899200, "metrics": {"qps": 1.0}, "pad": "x" * n}).encode(),
    "deep nesting that would exhaust the parser": lambda n: b"[" * n,
    "not even JSON": lambda n: b"\xff" * n,
    "a str line (JSONL) counted in bytes": lambda n: "秒" * (n // 3 + 1),
}


@pytest.mark.parametrize("make", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_an_oversized_message_is_rejected_before_it_is_parsed(make, monkeypatch):
    import sentinel.core.samples
    from sentinel.core.samples import MAX_MESSAGE_BYTES, Rejection, decode

    assert getattr(decode(make(MAX_MESSAGE_BYTES // 2)), "reason", None) != "too_large"
    parsed = []
    monkeypatch.setattr(sentinel.core.samples.json, "loads", lambda raw: parsed.append(raw))
    rejected = decode(make(32 * 2**20))  # 32 MiB
    assert isinstance(rejected, Rejection) and rejected.reason == "too_large"
    assert parsed == []  # the parser never saw it


# --- alert episodes across restarts ----------------------------------------------------------

@pytest.mark.parametrize(("committed", "hints", "start"), [
    (10_000, [None, None], 8_000),       # no hint: rebuild_messages back
    (10_000, [5_000, None], 3_000),      # this replica's file
    (10_000, [None, 5_000], 3_000),      # the commit's metadata: a replica taking over
    (10_000, [7_000, 5_000], 3_000),     # both: the older
    (10_000, [None, 10_000], 8_000),     # at/after the committed offset: stale
    (30_000, [None, 5_000], 28_000),     # beyond MAX_HINT_REBUILDS x rebuild_messages
    (1_500, [None, 1_000], 0),           # never before the log's beginning
])
def test_a_rebuild_starts_before_the_oldest_hint_within_bounds(committed, hints, start):
    from sentinel.daemon.kafka_io import rebuild_start

    assert rebuild_start(committed, 0, 2000, hints) == start


@pytest.mark.parametrize(("metadata", "hint"), [
    ('{"rebuild_from": 18250}', 18250), ("", None), (None, None),
    ("written by another tool", None), ('{"rebuild_from": "3"}', None), ("[1]", None),
    ('{"rebuild_from": true}', None),
])
def test_the_hint_in_a_commits_metadata_is_read_back_or_ignored(metadata, hint):
    from sentinel.daemon.kafka_io import hint_metadata, metadata_hint

    assert metadata_hint(metadata) == hint
    assert metadata_hint(hint_metadata(18250)) == 18250 and hint_metadata(None) == ""


def test_where_a_firing_episode_began_is_saved_for_a_restart_and_dropped_once_resolved(tmp_path):
    """Found by the SIGKILL test: an episode older than `kafka.rebuild_messages` was unknown
    after a restart, so its resolve was never sent (the receiver kept it firing) and the
    rebuilt state fired a second episode nobody heard of. The daemon now saves, before each
    commit, the offset where each partition's oldest firing episode began; a restart rebuilds
    from before it (tests above: every episode resolved under its own key after 10 kills)."""
    from sentinel.daemon.rebuild_hints import RebuildHints
    from tests.testkit.loop import make_loop, rec

    def saved() -> int | None:
        return RebuildHints(tmp_path / "hints.json", "metrics", "sentinel").get(0)

    loop = make_loop(risk=0.9)
    loop.daemon.rebuild_hints = RebuildHints(tmp_path / "hints.json", "metrics", "sentinel")
    loop.feed(*(rec(i) for i in range(3)))  # no full window yet
    assert saved() is None
    loop.feed(*(rec(i) for i in range(3, 6)))  # fires in the poll that starts at offset 3
    assert [t.state for t in loop.notifier.submitted] == ["firing"]
    assert saved() == 3
    assert loop.source.hints == {0: 3}  # and with the commit, for another replica
    loop.feed(rec(6))  # still firing: the hint stays where the episode began
    assert saved() == 3 and loop.source.hints == {0: 3}
    loop.model.risk = 0.1
    loop.feed(rec(7), rec(8))
    assert [t.state for t in loop.notifier.submitted] == ["firing", "resolved"]
    assert saved() is None and loop.source.hints == {}
    assert RebuildHints(tmp_path / "hints.json", "other-topic", "sentinel").get(0) is None
