"""Real TLS on loopback for the security tests: a throwaway CA, an HTTPS receiver, and a
gateway that puts TLS and/or SASL (PLAIN, SCRAM) in front of the Tansu broker (whose listener speaks
neither: its --cert option does nothing in 0.6, and its SASL users cannot be created).

    >>> pki = Pki.create(tmp_path)                  # CA + a cert for 127.0.0.1 / localhost
    >>> receiver = Receiver(pki=pki).start()        # records POSTs, answers from a script
    >>> with SecuredBroker(tmp_path, pki) as broker:  # clients must speak TLS to broker.tls_bootstrap
    ...     ...
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import socket
import ssl
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme

from sentinel.sim.localbroker import TansuBroker
from tests.testkit.broker import free_port, tansu_binary


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path
    other_ca_file: Path  # a CA that signed nothing here: verification against it must fail

    @classmethod
    def create(cls, directory: Path, *names: str) -> Pki:
        ca, other = trustme.CA(), trustme.CA()
        cert = ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
        pki = cls(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                  directory / "other-ca.pem")
        ca.cert_pem.write_to_path(str(pki.ca_file))
        other.cert_pem.write_to_path(str(pki.other_ca_file))
        cert.private_key_pem.write_to_path(str(pki.key_file))
        with pki.cert_file.open("wb") as out:
            for blob in cert.cert_chain_pems:
                out.write(blob.bytes())
        return pki

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))








class KafkaGateway:
    """What a secured Kafka listener does, in front of a plain broker on `upstream_port`:
    TLS (with a `context`) and/or SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 (with `users`),
    then the bytes pass through.

    SASL is the broker side of the exchange kafka-python speaks (KIP-152): ApiVersions is
    forwarded to the broker, SaslHandshake and SaslAuthenticate are answered here, and any
    other request before a successful login closes the connection, as Kafka does.
    """

    def __init__(self, port: int, upstream_port: int, context: ssl.SSLContext | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.context, self.port, self.upstream_port = context, port, upstream_port
        self.users = users
        self.handshakes = 0  # completed TLS handshakes: proof that clients spoke TLS
        self.failed_handshakes = 0
        self.logins: list[tuple[str, bool]] = []  # (user, accepted) per SASL attempt
        self._listener = socket.create_server(("127.0.0.1", port))
        self._closed = threading.Event()

    def start(self) -> KafkaGateway:
        threading.Thread(target=self._accept, daemon=True, name="kafka-gateway").start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(10)
        if self.context is not None:
            try:
                client = self.context.wrap_socket(client, server_side=True)
            except (OSError, ssl.SSLError):
                self.failed_handshakes += 1
                client.close()
                return
            self.handshakes += 1
        upstream = None
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            if self.users is not None and not self._sasl(client, upstream):
                raise OSError("SASL login refused")
        except (OSError, ValueError, struct.error):
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
            return
        client.settimeout(None)
        upstream.settimeout(None)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def _sasl(self, client: socket.socket, upstream: socket.socket) -> bool:
        """Run the broker's side of the login; True once the client is authenticated."""
        from kafka.protocol.sasl import SaslHandshakeResponse

        assert self.users is not None
        login: _Login | None = None
        while True:
            frame = _read_frame(client)
            api_key, version, correlation_id = struct.unpack(">hhi", frame[:8])
            if api_key == 18:  # ApiVersions: the broker's own answer
                upstream.sendall(struct.pack(">i", len(frame)) + frame)
                answer = _read_frame(upstream)
                client.sendall(struct.pack(">i", len(answer)) + answer)
            elif api_key == 17:  # SaslHandshake: pick the mechanism
                from kafka.protocol.sasl import SaslHandshakeRequest

                mechanism = SaslHandshakeRequest.decode(frame, version=version, header=True).mechanism
                login = _Login(mechanism, self.users)
                reply = SaslHandshakeResponse(error_code=0, mechanisms=list(MECHANISMS),
                                              version=version)
                reply.with_header(correlation_id=correlation_id)
                client.sendall(reply.encode(header=True, framed=True))
            elif api_key == 36 and login is not None:  # SaslAuthenticate: one round
                from kafka.protocol.sasl import SaslAuthenticateRequest, SaslAuthenticateResponse

                token = bytes(SaslAuthenticateRequest.decode(frame, version=version,
                                                             header=True).auth_bytes)
                answer_bytes = login.step(token)
                failed = answer_bytes is None
                reply = SaslAuthenticateResponse(
                    error_code=58 if failed else 0,  # SASL_AUTHENTICATION_FAILED
                    error_message="Authentication failed: invalid credentials" if failed else None,
                    auth_bytes=b"" if failed else answer_bytes, session_lifetime_ms=0,
                    version=version)
                reply.with_header(correlation_id=correlation_id)
                client.sendall(reply.encode(header=True, framed=True))
                if failed or login.done:
                    self.logins.append((login.user, not failed))
                    return not failed
            else:  # anything else before a login: what Kafka does is close the connection
                return False

    def stop(self) -> None:
        self._closed.set()
        self._listener.close()


MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class _Login:
    """The server side of one SASL login (RFC 4616 PLAIN, RFC 5802 SCRAM); `step` returns the
    bytes to answer with, or None when the credentials are wrong."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.mechanism, self.users = mechanism, users
        self.user, self.done = "?", False
        self._hash = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}.get(mechanism)
        self._state: dict[str, bytes] = {}

    def step(self, token: bytes) -> bytes | None:
        if self.mechanism == "PLAIN":  # authzid \0 user \0 password
            _, user, password = token.split(b"\0", 2)
            self.user, self.done = user.decode(), True
            return b"" if self.users.get(self.user) == password.decode() else None
        if self._hash is None:
            return None
        if not self._state:  # client-first: n,,n=user,r=nonce
            bare = token.split(b",", 2)[2]
            fields = dict(item.split(b"=", 1) for item in bare.split(b","))
            self.user = fields[b"n"].decode()
            salt, nonce = os.urandom(16), fields[b"r"] + base64.b64encode(os.urandom(18))
            server_first = b"r=%s,s=%s,i=4096" % (nonce, base64.b64encode(salt))
            self._state = {"bare": bare, "first": server_first, "salt": salt, "nonce": nonce}
            return server_first
        # client-final: c=...,r=nonce,p=proof
        self.done = True
        without_proof, _, proof = token.rpartition(b",p=")
        fields = dict(item.split(b"=", 1) for item in without_proof.split(b","))
        password = self.users.get(self.user)
        if password is None or fields.get(b"r") != self._state["nonce"]:
            return None
        salted = hashlib.pbkdf2_hmac(self._hash, password.encode(), self._state["salt"], 4096)
        client_key = hmac.new(salted, b"Client Key", self._hash).digest()
        stored_key = hashlib.new(self._hash, client_key).digest()
        auth_message = b",".join((self._state["bare"], self._state["first"], without_proof))
        signature = hmac.new(stored_key, auth_message, self._hash).digest()
        given_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self._hash, given_key).digest(), stored_key):
            return None
        server_key = hmac.new(salted, b"Server Key", self._hash).digest()
        return b"v=" + base64.b64encode(hmac.new(server_key, auth_message, self._hash).digest())


def _read_frame(sock: socket.socket) -> bytes:
    size = struct.unpack(">i", _read_exactly(sock, 4))[0]
    return _read_exactly(sock, size)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except (OSError, ssl.SSLError):
        pass
    finally:
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.close()


class SecuredBroker(TansuBroker):
    """Tansu on a private plain port, advertising a KafkaGateway's port (TLS with a `pki`,
    SASL with `users`): every client that follows the metadata comes back through it."""

    def __init__(self, log_dir: Path, pki: Pki | None = None,
                 users: dict[str, str] | None = None) -> None:
        super().__init__(log_dir=log_dir)
        self.tls_port = free_port()
        self.proxy = KafkaGateway(self.tls_port, self.port,
                                  pki.server_context() if pki else None, users).start()

    @property
    def tls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    def start(self, timeout_seconds: float = 20.0) -> None:
        # TansuBroker.start advertises its own port; this one advertises the proxy's
        listen, advertised = f"tcp://127.0.0.1:{self.port}", f"tcp://127.0.0.1:{self.tls_port}"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", listen,
                 "--advertised-listener-url", advertised, "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_port(timeout_seconds)

    def _wait_port(self, timeout_seconds: float) -> None:
        import time

        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
                return
            time.sleep(0.05)
        raise RuntimeError(f"tansu did not listen on {self.port}:\n{self.log_tail()}")

    def stop(self) -> None:
        # in-memory storage, nothing to flush: SIGKILL spares the seconds tansu takes on SIGTERM
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.proxy.stop()
