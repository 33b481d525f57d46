"""One HTTP receiver for every test that needs something to POST (or GET) to.

    >>> receiver = Receiver().start()                  # plain HTTP on a free loopback port
    >>> receiver.script = [Reply(500), Reply(200)]     # answers in order, then `default`
    >>> notify(receiver.url())                          # the code under test POSTs
    >>> receiver.wait_for(2)[0].json()["status"]
    >>> receiver.stop()

HTTPS when given a `Pki` (tests.testkit.security). Every request is recorded with the
receiver's clock, so a test with a fake clock sees when (in its time) a request came.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from tests.testkit.wait import wait_until

if TYPE_CHECKING:
    from tests.testkit.security import Pki


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang_seconds: float = 0.0  # wait this long (or until the receiver stops) before answering
    body: bytes = b""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    wall_ts: float  # the receiver's clock when the request arrived

    def json(self) -> object:
        return json.loads(self.body)

    @property
    def key(self) -> str:
        return self.headers["Idempotency-Key"]

    @property
    def alert(self) -> tuple[str, str, str]:
        """(service, status, startsAt) of the one alert in a webhook body."""
        alert = self.json()["alerts"][0]  # type: ignore[index]
        return alert["labels"]["service"], alert["status"], alert["startsAt"]


class Receiver:
    """A ThreadingHTTPServer on loopback that records every POST and answers from a script;
    may start on a chosen port (a receiver that comes up late), HTTPS with a `pki`."""

    def __init__(self, port: int = 0, clock: Callable[[], float] = time.time,
                 pki: Pki | None = None) -> None:
        self.port = port
        self.clock = clock
        self.pki = pki
        self.script: list[Reply] = []  # answers in order; then `respond` or `default`
        self.default = Reply()
        self.respond: Callable[[Received], Reply] | None = None  # an answer made per request
        self.received: list[Received] = []
        self.released = threading.Event()  # ends every hang
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = Received(self.path, dict(self.headers), body, receiver.clock())
                with receiver._lock:
                    receiver.received.append(request)
                    reply = receiver.script.pop(0) if receiver.script else None
                if reply is None:
                    reply = receiver.respond(request) if receiver.respond else receiver.default
                if reply.hang_seconds:
                    receiver.released.wait(reply.hang_seconds)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST  # a query API (Prometheus's query_range): recorded and answered alike

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients that time out and leave, failed TLS handshakes: tests are about them

        self._server = Server(("127.0.0.1", self.port), Handler)
        if self.pki is not None:
            self._server.socket = self.pki.server_context().wrap_socket(
                self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def url(self, path: str = "/alerts") -> str:
        return f"{'https' if self.pki else 'http'}://127.0.0.1:{self.port}{path}"

    def wait_for(self, count: int, timeout_seconds: float = 5.0) -> list[Received]:
        wait_until(lambda: len(self.received) >= count, timeout_seconds,
                   lambda: f"{count} requests, got {len(self.received)}", 0.005)
        return list(self.received)

    def keys(self) -> set[str]:
        with self._lock:
            return {r.key for r in self.received}
