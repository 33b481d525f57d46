"""Alert delivery against real HTTP servers on loopback: durable, ordered, retried, never lost."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sentinel.config.schema import AlertingConfig, AlertmanagerConfig, DeliveryConfig, WebhookConfig
from sentinel.core.alerts import AlertTransition
from sentinel.errors import ConfigError, SentinelError
from sentinel.sinks import Delivery, Notifier, Outbox, OutboxError
from sentinel.sinks.base import rfc3339
from sentinel.sinks.retry import backoff_seconds, classify, retry_after_seconds
from tests.testkit.broker import free_port
from tests.testkit.clock import FakeClock
from tests.testkit.http import Received, Receiver, Reply
from tests.testkit.wait import wait_until

T0 = 1_763_899_200  # 2025-11-23T12:00:00Z
FIRING = AlertTransition("checkout", "firing", T0, 0.91, T0)
RESOLVED = AlertTransition("checkout", "resolved", T0 + 300, 0.12, T0)
CART = AlertTransition("cart", "firing", T0 + 10, 0.75, T0 + 10)
FAST = DeliveryConfig(initial_backoff_seconds=0.01, max_backoff_seconds=0.05)


# --- a real receiver -------------------------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def notifiers() -> Iterator[list[Notifier]]:
    """Notifiers a test made; stopped at the end whatever happened."""
    made: list[Notifier] = []
    yield made
    for notifier in made:
        notifier.stop(0.5)


@pytest.fixture
def make(tmp_path: Path, registry: CollectorRegistry, notifiers: list[Notifier]
         ) -> Callable[..., Notifier]:
    def make(*urls: str, timeout_seconds: float = 2.0, delivery: DeliveryConfig = FAST,
             alertmanager: AlertmanagerConfig | None = None, registry: CollectorRegistry = registry,
             secret_file: str | None = None, secret_env: str | None = None,
             **collaborators: object) -> Notifier:
        webhooks = tuple(WebhookConfig(url, timeout_seconds, secret_file, secret_env)
                         for url in urls)
        config = AlertingConfig(webhooks=webhooks, delivery=delivery, alertmanager=alertmanager)
        notifier = Notifier(config, tmp_path / "state", registry=registry,
                            random=lambda: 0.5, **collaborators)  # type: ignore[arg-type]
        notifiers.append(notifier)
        return notifier

    return make


def count(registry: CollectorRegistry, outcome: str, sink: str = "webhook0") -> float:
    value = registry.get_sample_value("sentinel_webhook_deliveries_total",
                                      {"sink": sink, "outcome": outcome})
    return value or 0.0


def pending(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("sentinel_outbox_pending")


# --- payload and headers ---------------------------------------------------------------------

@pytest.mark.parametrize("source", ["secret_file", "secret_env"])
def test_webhook_body_is_the_alertmanager_format_and_signed(
    source: str, receiver: Receiver, make: Callable[..., Notifier], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_path = tmp_path / "webhook.secret"
    secret_path.write_text("s3cret\n")
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "s3cret")
    where = {"secret_file": str(secret_path)} if source == "secret_file" else {
        "secret_env": "TEST_WEBHOOK_SECRET"}
    notifier = make(receiver.url(), **where)
    notifier.start()

    notifier.submit(FIRING)
    [got] = receiver.wait_for(1)

    assert got.path == "/alerts"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Idempotency-Key"] == f"{FIRING.episode_key}-firing"
    assert got.headers["X-Sentinel-Episode"] == FIRING.episode_key
    expected = "sha256=" + hmac.new(b"s3cret", got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["X-Sentinel-Signature"], expected)
    body = got.json()
    assert isinstance(body, dict)
    labels = {"alertname": "SentinelFailureRisk", "service": "checkout", "severity": "critical",
              "phase": "predicted"}
    assert {k: v for k, v in body.items() if k not in ("alerts", "commonAnnotations")} == {
        "version": "4",
        "groupKey": '{}:{alertname="SentinelFailureRisk", service="checkout"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "sentinel",
        "groupLabels": {"alertname": "SentinelFailureRisk", "service": "checkout"},
        "commonLabels": labels,
        "externalURL": "",
    }
    [alert] = body["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == labels
    assert alert["startsAt"] == "2025-11-23T12:00:00Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["fingerprint"] == FIRING.episode_key
    assert alert["generatorURL"] == ""
    assert set(alert["annotations"]) == {"summary", "description", "risk", "episode"}
    assert alert["annotations"]["risk"] == "0.9100"
    # the key `sentinel feedback --episode` takes: the service label and startsAt
    assert alert["annotations"]["episode"] == "checkout@2025-11-23T12:00:00Z"
    assert body["commonAnnotations"] == alert["annotations"]


def test_resolve_follows_its_firing_with_the_resolve_time_and_its_own_key(
    receiver: Receiver, make: Callable[..., Notifier]
) -> None:
    notifier = make(receiver.url())
    notifier.start()

    notifier.submit(FIRING)
    notifier.submit(RESOLVED)
    firing, resolved = receiver.wait_for(2)

    assert firing.json()["status"] == "firing"  # type: ignore[index]
    body = resolved.json()
    assert isinstance(body, dict)
    [alert] = body["alerts"]
    assert (body["status"], alert["status"]) == ("resolved", "resolved")
    assert alert["startsAt"] == "2025-11-23T12:00:00Z"  # the episode's firing
    assert alert["endsAt"] == "2025-11-23T12:05:00Z"  # the resolve's event time
    assert alert["fingerprint"] == firing.json()["alerts"][0]["fingerprint"]  # type: ignore[index]
    assert resolved.headers["Idempotency-Key"] == f"{FIRING.episode_key}-resolved"
    assert "X-Sentinel-Signature" not in resolved.headers  # no secret configured


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ({"secret_file": "/nonexistent/webhook.secret"}, "alerting.webhooks[0].secret_file"),
        ({"secret_file": "EMPTY"}, "alerting.webhooks[0].secret_file"),
        ({"secret_env": "SENTINEL_TEST_UNSET_SECRET"}, "alerting.webhooks[0].secret_env"),
    ],
)
def test_missing_secret_stops_start_up_naming_the_key(
    where: dict[str, str], key: str, make: Callable[..., Notifier], tmp_path: Path
) -> None:
    if where.get("secret_file") == "EMPTY":
        (tmp_path / "empty").write_text("\n")
        where = {"secret_file": str(tmp_path / "empty")}

    with pytest.raises(ConfigError) as caught:
        make("http://127.0.0.1:9/alerts", **where)

    assert caught.value.key == key


# --- retries ---------------------------------------------------------------------------------

def test_server_error_is_retried_with_the_same_body_and_idempotency_key(
    receiver: Receiver, make: Callable[..., Notifier], registry: CollectorRegistry
) -> None:
    receiver.script = [Reply(500), Reply(502)]
    notifier = make(receiver.url())
    notifier.start()

    notifier.submit(FIRING)
    assert notifier.flush(5.0)

    attempts = receiver.received
    assert len(attempts) == 3
    assert len({a.body for a in attempts}) == 1
    assert {a.headers["Idempotency-Key"] for a in attempts} == {f"{FIRING.episode_key}-firing"}
    assert (count(registry, "retried"), count(registry, "delivered")) == (2, 1)
    assert pending(registry) == 0
    assert registry.get_sample_value("sentinel_delivery_latency_seconds_count",
                                     {"sink": "webhook0"}) == 1


@pytest.mark.parametrize(
    ("status", "retry_after", "waited"),
    [
        (503, "7", 7.0),
        (429, "7", 7.0),
        (503, formatdate(T0 + 600 + 30, usegmt=True), 30.0),  # an HTTP date, 30 s ahead
    ],
)
def test_retry_after_is_honoured(
    status: int, retry_after: str, waited: float, receiver: Receiver,
    make: Callable[..., Notifier], registry: CollectorRegistry
) -> None:
    clock = FakeClock(now=0.0, wall_offset=T0 + 600)
    receiver.script = [Reply(status, {"Retry-After": retry_after})]
    notifier = make(receiver.url(), clock=clock.monotonic, wall_clock=clock.time,
                    wait=clock.wait)
    notifier.start()

    notifier.submit(FIRING)
    assert notifier.flush(5.0)

    assert len(receiver.received) == 2
    assert waited in [pytest.approx(w) for w in clock.waits if w]
    assert clock.now == pytest.approx(waited)  # the retry came no sooner
    assert (count(registry, "retried"), count(registry, "delivered")) == (1, 1)


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422, 301])
def test_client_error_is_rejected_not_retried(
    status: int, receiver: Receiver, make: Callable[..., Notifier], registry: CollectorRegistry
) -> None:
    receiver.script = [Reply(status)]
    notifier = make(receiver.url())
    notifier.start()

    notifier.submit(FIRING)
    notifier.submit(CART)  # queued behind it: arrives only once the first is done with
    first, second = receiver.wait_for(2)
    assert notifier.flush(5.0)

    assert (first.json()["alerts"][0]["labels"]["service"],  # type: ignore[index]
            second.json()["alerts"][0]["labels"]["service"]) == ("checkout", "cart")  # type: ignore[index]
    assert len(receiver.received) == 2
    assert (count(registry, "rejected"), count(registry, "retried")) == (1, 0)


def test_receiver_hanging_past_the_timeout_counts_as_a_retry(
    receiver: Receiver, make: Callable[..., Notifier], registry: CollectorRegistry
) -> None:
    receiver.script = [Reply(200, hang_seconds=5.0)]
    notifier = make(receiver.url(), timeout_seconds=0.2)
    notifier.start()

    notifier.submit(FIRING)
    assert notifier.flush(5.0)

    hung, retried = receiver.received
    assert hung.headers["Idempotency-Key"] == retried.headers["Idempotency-Key"]
    assert (count(registry, "retried"), count(registry, "delivered")) == (1, 1)


def test_each_sink_gets_the_firing_before_its_resolve_even_across_retries(
    receiver: Receiver, make: Callable[..., Notifier]
) -> None:
    receiver.script = [Reply(500), Reply(503), Reply(500)]
    notifier = make(receiver.url())
    notifier.start()

    notifier.submit(FIRING)
    notifier.submit(RESOLVED)
    assert notifier.flush(5.0)

    states = [r.json()["status"] for r in receiver.received]  # type: ignore[index]
    assert states == ["firing"] * 4 + ["resolved"]


def test_undelivered_alert_expires_after_max_age(
    receiver: Receiver, make: Callable[..., Notifier], registry: CollectorRegistry
) -> None:
    clock = FakeClock(now=0.0, wall_offset=T0 + 600.0)
    receiver.default = Reply(500)
    delivery = DeliveryConfig(initial_backoff_seconds=2.0, max_backoff_seconds=4.0,
                              max_age_seconds=20.0)
    notifier = make(receiver.url(), delivery=delivery, clock=clock.monotonic,
                    wall_clock=clock.time, wait=clock.wait)
    notifier.start()

    notifier.submit(FIRING)
    assert notifier.flush(5.0)

    assert count(registry, "expired") == 1
    assert count(registry, "retried") == len(receiver.received) >= 5
    assert clock.now >= 20.0


def test_backoff_is_full_jitter_doubling_up_to_the_cap() -> None:
    config = DeliveryConfig(initial_backoff_seconds=1.0, max_backoff_seconds=60.0)
    bounds = [backoff_seconds(n, config, lambda: 1.0) for n in range(1, 9)]

    assert bounds == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_seconds(3, config, lambda: 0.25) == 1.0
    assert backoff_seconds(10_000, config, lambda: 1.0) == 60  # no overflow


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "delivered"), (204, "delivered"), (None, "retried"), (408, "retried"),
     (429, "retried"), (500, "retried"), (503, "retried"), (301, "rejected"),
     (400, "rejected"), (404, "rejected"), (413, "rejected")],
)
def test_status_decides_delivered_retried_or_rejected(status: int | None, outcome: str) -> None:
    assert classify(status) == outcome


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), (" 0 ", 0.0), (formatdate(T0 + 90, usegmt=True), 90.0),
     (formatdate(T0 - 90, usegmt=True), 0.0), ("soon", None), ("-5", None)],
)
def test_retry_after_reads_seconds_or_an_http_date(value: str, seconds: float | None) -> None:
    assert retry_after_seconds({"Retry-After": value}, now_ts=T0) == seconds
    assert retry_after_seconds({}, now_ts=T0) is None


# --- never stall, never lose -----------------------------------------------------------------

def test_submit_returns_fast_while_the_receiver_hangs(
    receiver: Receiver, make: Callable[..., Notifier], registry: CollectorRegistry
) -> None:
    receiver.default = Reply(200, hang_seconds=10.0)
    notifier = make(receiver.url(), timeout_seconds=10.0)
    notifier.start()

    started = time.monotonic()
    for i in range(20):
        notifier.submit(AlertTransition(f"svc{i}", "firing", T0, 0.9, T0))
    elapsed = time.monotonic() - started

    assert elapsed < 1.0
    receiver.wait_for(1)  # the worker is stuck in a request meanwhile
    assert pending(registry) == 20
    receiver.released.set()
    assert notifier.flush(5.0)


def test_a_hanging_sink_does_not_delay_the_others(
    make: Callable[..., Notifier], registry: CollectorRegistry
) -> None:
    slow, fast = Receiver().start(), Receiver().start()
    try:
        slow.default = Reply(200, hang_seconds=10.0)
        notifier = make(slow.url(), fast.url(), timeout_seconds=10.0)
        notifier.start()

        notifier.submit(FIRING)
        notifier.submit(RESOLVED)
        wait_until(lambda: count(registry, "delivered", "webhook1") == 2, 2.0)
        slow.wait_for(1)

        assert len(slow.received) == 1  # still stuck in the first request
        assert count(registry, "delivered", "webhook0") == 0
        assert pending(registry) == 2
    finally:
        slow.stop()
        fast.stop()


def test_pending_alert_survives_a_restart_and_arrives_once(
    make: Callable[..., Notifier], tmp_path: Path
) -> None:
    port = free_port()  # nobody listens there yet: the receiver is down
    url = f"http://127.0.0.1:{port}/alerts"
    first_registry = CollectorRegistry()
    first = make(url, registry=first_registry)
    first.start()
    first.submit(FIRING)
    wait_until(lambda: count(first_registry, "retried") >= 2)
    assert first.stop(2.0)
    assert len(list((tmp_path / "state" / "outbox").glob("*.json"))) == 1

    receiver = Receiver(port).start()
    try:
        second_registry = CollectorRegistry()
        second = make(url, registry=second_registry)
        assert pending(second_registry) == 1
        second.start()
        assert second.flush(5.0)
        second.submit(CART)  # a marker: once it is in, nothing older can still be coming
        assert second.flush(5.0)

        services = [r.json()["alerts"][0]["labels"]["service"]  # type: ignore[index]
                    for r in receiver.received]
        assert services == ["checkout", "cart"]
        assert count(second_registry, "delivered") == 2
    finally:
        receiver.stop()


def test_overflow_drops_the_oldest_and_counts_it(
    receiver: Receiver, make: Callable[..., Notifier], registry: CollectorRegistry
) -> None:
    notifier = make(receiver.url(), delivery=DeliveryConfig(0.01, 0.05, max_pending=2))
    notifier.submit(FIRING)
    notifier.submit(RESOLVED)
    notifier.submit(CART)  # one too many: the FIRING goes

    assert count(registry, "dropped_overflow") == 1
    assert pending(registry) == 2
    notifier.start()
    assert notifier.flush(5.0)
    received = [(r.json()["alerts"][0]["labels"]["service"], r.json()["status"])  # type: ignore[index]
                for r in receiver.received]
    assert received == [("checkout", "resolved"), ("cart", "firing")]


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"\xff\xfe", b"[]", b'{"sink": "webhook0", "created_ts": 1}',
     b'{"sink": "webhook0", "created_ts": 1, "transition": {"service": "x", "state": "on"}}'],
)
def test_corrupt_outbox_file_is_moved_aside_and_counted(
    content: bytes, receiver: Receiver, make: Callable[..., Notifier],
    registry: CollectorRegistry, tmp_path: Path
) -> None:
    outbox = tmp_path / "state" / "outbox"
    Outbox(outbox).put(Delivery("webhook0", FIRING, time.time()))
    (outbox / "00000000000000000007.json").write_bytes(content)

    notifier = make(receiver.url())
    notifier.start()
    assert notifier.flush(5.0)

    assert (outbox / "corrupt" / "00000000000000000007.json").read_bytes() == content
    assert registry.get_sample_value("sentinel_outbox_corrupt_total") == 1
    assert len(receiver.received) == 1
    notifier.submit(CART)  # sequence numbers go on past the corrupt file's
    assert notifier.flush(5.0)
    assert (outbox / "corrupt" / "00000000000000000007.json").exists()


def test_outbox_reloads_in_order_and_removes_half_written_files(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for transition in (FIRING, CART, RESOLVED):
        outbox.put(Delivery("webhook0", transition, T0))
    (tmp_path / ".00000000000000000004.json.tmp").write_bytes(b'{"sink": "web')

    reloaded = Outbox(tmp_path)

    assert [d.transition for d in reloaded.pending()] == [FIRING, CART, RESOLVED]
    assert not list(tmp_path.glob(".*.tmp"))
    reloaded.put(Delivery("webhook0", CART, T0))
    assert [d.seq for d in reloaded.pending()] == [1, 2, 3, 4]


def test_an_unwritable_outbox_keeps_the_alert_in_memory_counts_it_and_still_delivers(
    make: Callable[..., Notifier], registry: CollectorRegistry, tmp_path: Path
) -> None:
    notifier = make("http://127.0.0.1:9/alerts")
    outbox = tmp_path / "state" / "outbox"
    shutil.rmtree(outbox)
    outbox.write_text("not a directory")  # chmod would not stop root

    notifier.submit(FIRING)  # no exception: an alert must not wait for a disk

    assert notifier.unsaved() == 1 and len(notifier.outbox) == 1
    assert "state.dir" in (notifier.problem or "")
    assert registry.get_sample_value("sentinel_outbox_write_errors_total") == 1
    assert registry.get_sample_value("sentinel_outbox_unsaved") == 1
    notifier.outbox.remove(notifier.outbox.head("webhook0"))  # as a delivery does
    assert notifier.unsaved() == 0

    with pytest.raises(OutboxError, match=r"state\.dir") as caught:
        make("http://127.0.0.1:9/alerts")  # but none starts on it
    assert isinstance(caught.value, SentinelError)


# --- Alertmanager ----------------------------------------------------------------------------

def am_alerts(received: Received, alertname: str = "SentinelFailureRisk") -> list[dict]:
    body = received.json()
    assert isinstance(body, list)
    return [a for a in body if a["labels"]["alertname"] == alertname]


def test_alertmanager_keeps_firing_alerts_alive_and_resolves_at_the_resolve_time(
    make: Callable[..., Notifier], registry: CollectorRegistry, tmp_path: Path
) -> None:
    clock = FakeClock(now=0.0, wall_offset=T0 + 600.0)
    am = Receiver(clock=clock.time).start()
    try:
        notifier = make(alertmanager=AlertmanagerConfig(am.url(""), resend_interval_seconds=60),
                        clock=clock.monotonic, wall_clock=clock.time, wait=clock.wait)
        notifier.submit(FIRING)
        notifier.start()
        am.wait_for(4)  # a resend at start, the firing itself, then resends 60 s apart
        notifier.submit(RESOLVED)
        wait_until(lambda: any(a["endsAt"] == rfc3339(RESOLVED.ts)
                               for r in am.received for a in am_alerts(r)))
        after = len(am.received)
        am.wait_for(after + 2)
    finally:
        am.stop()

    assert {r.path for r in am.received} == {"/api/v2/alerts"}
    posts = list(am.received)
    resolve_at = next(i for i, r in enumerate(posts)
                      if any(a["endsAt"] == rfc3339(RESOLVED.ts) for a in am_alerts(r)))
    firing_posts = [r for r in posts[:resolve_at] if am_alerts(r)]
    assert len(firing_posts) >= 3
    for post in firing_posts:
        [alert] = am_alerts(post)
        assert alert["labels"] == {"alertname": "SentinelFailureRisk", "service": "checkout",
                                   "severity": "critical", "phase": "predicted"}
        assert alert["startsAt"] == rfc3339(T0)
        assert alert["endsAt"] == rfc3339(post.wall_ts + 4 * 60)  # alive for 4 intervals
    assert all(not am_alerts(r) for r in posts[resolve_at + 1:])  # never re-fired
    resent = [r for r in posts if am_alerts(r, "SentinelWatchdog")]  # the transitions: alone
    assert len(resent) == len(posts) - 2 >= 4
    for post in resent:
        [watchdog] = am_alerts(post, "SentinelWatchdog")
        assert watchdog["labels"] == {"alertname": "SentinelWatchdog", "severity": "none"}
        assert watchdog["endsAt"] == rfc3339(post.wall_ts + 4 * 60)
    resends = [w for w in clock.waits if w and w > 1]
    assert resends and all(w <= 60 for w in resends)
    assert registry.get_sample_value("sentinel_alertmanager_resends_total",
                                     {"outcome": "delivered"}) >= 3
    assert count(registry, "delivered", "alertmanager") == 2
    assert json.loads((tmp_path / "state" / "outbox" / "alertmanager-firing.json").read_text()) \
        == {"firing": []}


def test_alertmanager_resends_go_on_after_a_restart(
    make: Callable[..., Notifier], tmp_path: Path
) -> None:
    am = Receiver().start()
    try:
        config = AlertmanagerConfig(am.url("/"), resend_interval_seconds=60, watchdog=False)
        make(alertmanager=config).submit(FIRING)  # never started: as if it died at once
        firing_file = tmp_path / "state" / "outbox" / "alertmanager-firing.json"
        assert json.loads(firing_file.read_text())["firing"][0]["service"] == "checkout"

        restarted = make(alertmanager=config, registry=CollectorRegistry())
        restarted.start()
        first = am.wait_for(1)[0]
    finally:
        am.stop()

    assert first.path == "/api/v2/alerts"
    [alert] = am_alerts(first)
    assert alert["labels"]["service"] == "checkout"
    assert am_alerts(first, "SentinelWatchdog") == []


ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager (Debian package prometheus-alertmanager) on loopback; its base URL."""
    if ALERTMANAGER is None:
        pytest.skip("prometheus-alertmanager is not installed")
    config = tmp_path / "alertmanager.yml"
    config.write_text("route: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n")
    url = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address={url.removeprefix('http://')}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _get(f"{url}/-/ready") is not None, 10.0, lambda: "Alertmanager")
        yield url
    finally:
        process.terminate()
        process.wait(5)


def _get(url: str) -> object:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            body = response.read()
            return json.loads(body) if body.startswith((b"[", b"{")) else body
    except OSError:
        return None


def test_real_alertmanager_shows_the_alert_firing_then_resolved(
    alertmanager: str, make: Callable[..., Notifier]
) -> None:
    now = int(time.time())
    firing = AlertTransition("checkout", "firing", now - 20, 0.93, now - 20)
    resolved = AlertTransition("checkout", "resolved", now - 5, 0.1, now - 20)
    notifier = make(alertmanager=AlertmanagerConfig(alertmanager, resend_interval_seconds=0.5))
    notifier.start()

    def active() -> dict[str, dict]:
        alerts = _get(f"{alertmanager}/api/v2/alerts")
        return {a["labels"]["alertname"]: a for a in alerts} if isinstance(alerts, list) else {}

    notifier.submit(firing)
    wait_until(lambda: "SentinelFailureRisk" in active(), 5.0, lambda: "the firing alert")
    alert = active()["SentinelFailureRisk"]
    assert alert["labels"] == {"alertname": "SentinelFailureRisk", "service": "checkout",
                               "severity": "critical", "phase": "predicted"}
    assert alert["status"]["state"] == "active"
    assert alert["startsAt"].startswith(rfc3339(now - 20).removesuffix("Z"))
    assert "SentinelWatchdog" in active()

    notifier.submit(resolved)
    wait_until(lambda: "SentinelFailureRisk" not in active(), 5.0, lambda: "the resolve")
    assert "SentinelWatchdog" in active()


def test_alertmanager_resends_say_what_drives_the_risk_now(
    make: Callable[..., Notifier], tmp_path: Path
) -> None:
    """A refresh (the pipeline's recomputed drivers while firing) changes what the re-sends
    say, survives a restart, and is ignored for an episode the sink does not hold."""
    from dataclasses import replace

    from sentinel.core.attribution import Driver

    at_firing = (Driver("cpu", 0.5, 3.0, 60, "rising"),)
    now = (Driver("p99_ms", 0.6, 5.0, 120, "rising"), Driver("cpu", 0.2, 2.5, 120, "steady"))
    am = Receiver().start()
    try:
        config = AlertmanagerConfig(am.url("/"), resend_interval_seconds=60, watchdog=False)
        first = make(alertmanager=config)  # never started: as if it died at once
        first.submit(replace(FIRING, drivers=at_firing))
        first.refresh([replace(FIRING, ts=FIRING.ts + 60, risk=0.95, drivers=now),
                       AlertTransition("elsewhere", "firing", T0, 0.9, T0 - 10)])
        restarted = make(alertmanager=config, registry=CollectorRegistry())
        restarted.start()
        posts = am.wait_for(2)  # the re-send at start and the queued firing
    finally:
        am.stop()

    alerts = [a for post in posts for a in am_alerts(post)]
    assert {a["labels"]["service"] for a in alerts} == {"checkout"}
    said = sorted(tuple(d["metric"] for d in json.loads(a["annotations"]["drivers"]))
                  for a in alerts)
    assert said == [("cpu",), ("p99_ms", "cpu")]  # the firing as queued; the re-send as now
    resent = next(a for a in alerts if a["annotations"]["risk"] == "0.9500")
    assert resent["startsAt"] == rfc3339(FIRING.started_ts)
    assert resent["annotations"]["summary"].endswith(
        "; mostly p99_ms: 5.0 sd above this service's normal, rising for 2 min")
