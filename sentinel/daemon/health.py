"""/metrics, /healthz, /readyz (and POST /feedback) on one small threaded HTTP server.

    >>> health = HealthState(stall_after_seconds=30.0)
    >>> server = HealthServer("127.0.0.1", 9108, registry, health).start()
    >>> health.progressed()                       # the main loop, after every poll
    >>> health.set_check("model", True, "20251124T000000Z-1a2b3c4d")
    >>> server.stop()

- ``/healthz`` (liveness): 200 while the main loop completed a poll (even an empty one)
  within `stall_after_seconds`, else 503. A broker outage does not make it fail: the loop
  still turns; restarting would not help.
- ``/readyz`` (readiness): 200 when every check (model, partitions, broker) is ok, else 503
  with the failing checks in the body. `degraded` names the parts that fail without
  stopping the scoring (e.g. the history store on a full disk); they do not fail readiness.
- A /metrics request that fails (the exposition raised) answers 500 with the reason, logs
  an error, counts ``sentinel_scrape_failures_total`` (visible in the next scrape that
  works) and fails readiness (check ``metrics``) until a scrape succeeds again: monitoring
  that has gone blind must never look healthy.

Both answer JSON. The main loop writes the state; HTTP threads only read it, under a lock,
so a request never touches Kafka or the model.

``POST /feedback`` takes an operator's verdict on an alert episode (see
sentinel.daemon.feedback_store); it exists when the runner passes `on_feedback`.

With `metrics.tls` the listener speaks HTTPS only; with `metrics.basic_auth` /metrics and
/feedback (and, unless `open_probes`, the probes) answer 401 without the right credentials. The TLS
handshake runs on the request's own thread, so a client that connects and stalls holds one
thread for at most REQUEST_TIMEOUT_SECONDS, never the accept loop.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import CounterMetricFamily

from sentinel.config.schema import MetricsConfig
from sentinel.config.secrets import Secret, read_secret
from sentinel.daemon.telemetry import exposition
from sentinel.errors import SentinelError
from sentinel.tls import server_context

log = logging.getLogger(__name__)

READY_CHECKS = ("model", "partitions", "broker")
MAX_FEEDBACK_BYTES = 16 << 10
# POST /feedback's body -> (HTTP status, JSON answer); runs on the request's thread
FeedbackHandler = Callable[[bytes], tuple[int, dict[str, object]]]
PROBES = ("/healthz", "/readyz")
REQUEST_TIMEOUT_SECONDS = 10.0  # a client silent this long (TLS handshake included) is dropped


class BasicAuth:
    """The one username and password /metrics accepts; compared in constant time."""

    def __init__(self, username: str, password: Secret, open_probes: bool = True) -> None:
        self._expected = f"{username}:{password.reveal()}".encode()
        self.open_probes = open_probes

    def allows(self, authorization: str | None) -> bool:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)

    def __repr__(self) -> str:
        return f"BasicAuth(open_probes={self.open_probes})"


class HealthState:
    """What the probes report; thread-safe. `clock` is monotonic."""

    def __init__(self, stall_after_seconds: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.stall_after_seconds = stall_after_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_progress: float | None = None
        self._checks: dict[str, tuple[bool, str]] = {name: (False, "not checked yet")
                                                     for name in READY_CHECKS}
        self._degraded: dict[str, str] = {}
        self.scrape_failures = 0

    def scrape_failed(self, problem: str) -> None:
        with self._lock:
            self.scrape_failures += 1
            self._checks["metrics"] = (False, f"the last /metrics scrape failed: {problem}")

    def scrape_succeeded(self) -> None:
        with self._lock:
            if "metrics" in self._checks and not self._checks["metrics"][0]:
                self._checks["metrics"] = (True, "the last /metrics scrape succeeded")

    def progressed(self) -> None:
        with self._lock:
            self._last_progress = self.clock()

    def set_check(self, name: str, ok: bool, detail: str) -> None:
        with self._lock:
            self._checks[name] = (ok, detail)

    def set_degraded(self, name: str, problem: str | None) -> None:
        """`problem` while a non-essential part fails (shown in /readyz), None once it works."""
        with self._lock:
            if problem is None:
                self._degraded.pop(name, None)
            else:
                self._degraded[name] = problem

    def liveness(self) -> tuple[bool, dict[str, object]]:
        with self._lock:
            now, last = self.clock(), self._last_progress
        since = now - (self._started if last is None else last)
        ok = since <= self.stall_after_seconds
        return ok, {"status": "ok" if ok else "stalled",
                    "seconds_since_progress": round(since, 3),
                    "stall_after_seconds": self.stall_after_seconds}

    def readiness(self) -> tuple[bool, dict[str, object]]:
        with self._lock:
            checks, degraded = dict(self._checks), dict(self._degraded)
        ok = all(passed for passed, _ in checks.values())
        status = ("ready" if ok else "not ready") + (", degraded" if degraded else "")
        return ok, {"status": status, "degraded": degraded,
                    "checks": {name: {"ok": passed, "detail": detail}
                               for name, (passed, detail) in checks.items()},
                    "failing": [name for name, (passed, _) in checks.items() if not passed]}


class HealthServer:
    """Serves the registry and the probes; `start()` returns once the port is bound."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, state: HealthState,
                 tls: ssl.SSLContext | None = None, auth: BasicAuth | None = None,
                 on_feedback: FeedbackHandler | None = None) -> None:
        self.host, self.port = host, port
        self.registry, self.state = registry, state
        self.tls, self.auth = tls, auth
        self.on_feedback = on_feedback
        self._server: ThreadingHTTPServer | None = None
        registry.register(_ScrapeFailures(state))

    @classmethod
    def from_config(cls, config: MetricsConfig, registry: CollectorRegistry, state: HealthState,
                    on_feedback: FeedbackHandler | None = None) -> HealthServer:
        """Loads the certificate and the password now: ConfigError when they are unusable."""
        tls = auth = None
        if config.tls is not None:
            tls = server_context("metrics.tls", config.tls.cert_file, config.tls.key_file)
        if config.basic_auth is not None:
            password = read_secret(config.basic_auth.password, "metrics.basic_auth")
            auth = BasicAuth(config.basic_auth.username, password, config.basic_auth.open_probes)
            if tls is None and config.host.strip("[]") not in ("127.0.0.1", "::1", "localhost"):
                log.warning("metrics.basic_auth without metrics.tls on %s: the password crosses "
                            "the network in clear; add metrics.tls", config.listen)
        return cls(config.host, config.port, registry, state, tls, auth, on_feedback)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def start(self) -> HealthServer:
        """Raises SentinelError when the address cannot be bound (in use, bad host)."""
        handler = _handler(self.registry, self.state, self.auth, self.tls is not None,
                           self.on_feedback)
        try:
            self._server = ThreadingHTTPServer((self.host.strip("[]"), self.port), handler)
        except OSError as exc:
            raise SentinelError(f"cannot serve /metrics on {self.host}:{self.port}: {exc}; "
                                f"change metrics.listen") from exc
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True,
                                                       do_handshake_on_connect=False)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.2,), daemon=True,
                         name="sentinel-http").start()
        log.info("serving /metrics, /healthz and /readyz on %s://%s:%d (%s)", self.scheme,
                 self.host, self.port, _auth_words(self.auth))
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _ScrapeFailures:
    """`sentinel_scrape_failures_total`, read from the HealthState at scrape time."""

    def __init__(self, state: HealthState) -> None:
        self.state = state

    def describe(self) -> list[CounterMetricFamily]:
        return list(self.collect())

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("sentinel_scrape_failures",
                                  "/metrics requests that failed (answered 500; see the log)",
                                  value=self.state.scrape_failures)


def _auth_words(auth: BasicAuth | None) -> str:
    if auth is None:
        return "no authentication"
    return "basic auth on /metrics" + ("" if auth.open_probes else " and the probes")


def _handler(registry: CollectorRegistry, state: HealthState, auth: BasicAuth | None,
             tls: bool, on_feedback: FeedbackHandler | None = None
             ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_SECONDS
        server_version, sys_version = "sentinel", ""  # no Python version in the Server header

        def setup(self) -> None:
            super().setup()  # sets the timeout on the socket, then the handshake may block
            if tls:
                try:
                    self.request.do_handshake()
                except (OSError, ssl.SSLError) as exc:  # plain HTTP, bad client, timeout
                    log.debug("TLS handshake with %s failed: %s", self.client_address[0], exc)
                    self.close_connection = True
                    self._failed = True

        def handle(self) -> None:
            if not getattr(self, "_failed", False):
                super().handle()

        def _refused(self, path: str) -> bool:
            """Answers 401 (and True) unless the request may see `path`."""
            protected = auth is not None and not (auth.open_probes and path in PROBES)
            if not protected or auth.allows(self.headers.get("Authorization")):  # type: ignore[union-attr]
                return False
            body = b'{"error": "authentication required"}'
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="sentinel", charset="UTF-8"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True

        def do_POST(self) -> None:
            """``POST /feedback`` {"episode", "verdict", "note"?}: an operator's verdict on an
            alert episode (sentinel.daemon.feedback_store); authenticated like /metrics."""
            path = self.path.split("?", 1)[0]
            if self._refused(path):
                return
            if path != "/feedback" or on_feedback is None:
                self._send(404, b'{"error": "not found: POST /feedback only"}', "application/json")
                return
            try:
                length = int(self.headers.get("Content-Length") or "-1")
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_FEEDBACK_BYTES:
                self.close_connection = True
                self._send(413 if length > MAX_FEEDBACK_BYTES else 411,
                           json.dumps({"error": f"a JSON body of at most {MAX_FEEDBACK_BYTES} "
                                                "bytes with a Content-Length"}).encode(),
                           "application/json")
                return
            status, answer = on_feedback(self.rfile.read(length))
            self._send(status, json.dumps(answer).encode(), "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if self._refused(path):
                return
            if path == "/metrics":
                try:
                    body = exposition(registry)
                except Exception as exc:
                    problem = f"{type(exc).__name__}: {str(exc)[:300]}"
                    state.scrape_failed(problem)
                    log.error("/metrics scrape failed (%d so far; readiness fails until one "
                              "succeeds): %s", state.scrape_failures, problem, exc_info=True)
                    self._send(500, json.dumps({"error": "metrics exposition failed",
                                                "detail": problem}).encode(), "application/json")
                    return
                state.scrape_succeeded()
                self._send(200, body, CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, body = state.liveness() if path == "/healthz" else state.readiness()
                self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
            else:
                self._send(404, b'{"error": "not found: try /metrics, /healthz, /readyz"}',
                           "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the log

    return Handler
