"""/metrics, /healthz and /readyz on one small threaded HTTP server.

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

Both answer JSON. The main loop writes the state; HTTP threads only read it, under a lock,
so a request never touches Kafka or the model.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sentinel.errors import SentinelError

log = logging.getLogger(__name__)

READY_CHECKS = ("model", "partitions", "broker")


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

    def __init__(self, host: str, port: int, registry: CollectorRegistry, state: HealthState
                 ) -> None:
        self.host, self.port = host, port
        self.registry, self.state = registry, state
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> HealthServer:
        """Raises SentinelError when the address cannot be bound (in use, bad host)."""
        handler = _handler(self.registry, self.state)
        try:
            self._server = ThreadingHTTPServer((self.host.strip("[]"), self.port), handler)
        except OSError as exc:
            raise SentinelError(f"cannot serve /metrics on {self.host}:{self.port}: {exc}; "
                                f"change metrics.listen") from exc
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.2,), daemon=True,
                         name="sentinel-http").start()
        log.info("serving /metrics, /healthz and /readyz on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _handler(registry: CollectorRegistry, state: HealthState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
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
