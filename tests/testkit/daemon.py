"""Helpers for the `sentinel run` tests: configs, a webhook receiver, daemons, scraping.

Everything here talks to real things: the tansu broker, HTTP on loopback, `python -m
sentinel run` as a subprocess (or the same App in a thread).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sentinel.config.load import parse_config
from sentinel.config.schema import Config
from sentinel.core.alerts import AlertTransition
from sentinel.core.pipeline import Score
from sentinel.core.samples import Sample, decode
from sentinel.model.artifact import load_model
from sentinel.runner import App
from sentinel.sim import simulate
from sentinel.training.backtest import replay
from sentinel.training.train import train
from tests.testkit.broker import FAST_GROUP, free_port
from tests.testkit.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG = ROOT / "config" / "sentinel.yaml"
STREAM = simulate.simulate(services=3, days=0.3, seed=5).samples  # ~7,700 samples


def train_small_model(out: Path) -> float:
    """A small LSTM trained on a day of 4 services into `out`; returns an alert threshold.

    A 2-epoch model is no oracle: the threshold is the one of its risk percentiles on STREAM
    that gives the stream the most alert transitions, so that there are episodes to deliver.
    (The session fixture `trained` in conftest.py trains it once for all tests.)"""
    out.parent.mkdir(parents=True, exist_ok=True)
    history = out.parent / "history.jsonl"
    simulate.write_jsonl(simulate.simulate(services=4, days=1, seed=9).samples, history)
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["training"] = {"epochs": 2, "lstm_units": [8, 4], "negative_stride": 4,
                       "validation_fraction": 0.3}
    config = parse_config(raw)
    train(config, [history], out)
    samples = [s for s in (decode(json.dumps(x)) for x in STREAM) if isinstance(s, Sample)]
    model = load_model(out, config)
    risks = [s.risk for s in replay(config, model.scorer, samples,
                                    config.alerting.resolved(0.5)).scores]
    candidates = [round(float(t), 4) for t in np.quantile(risks, np.linspace(0.5, 0.98, 13))]
    return max(candidates, key=lambda t: len(replay(config, model.scorer, samples,
                                                    config.alerting.resolved(t)).transitions))






# --- config ----------------------------------------------------------------------------------

def write_config(path: Path, *, bootstrap: str, topic: str, model_dir: Path, state_dir: Path,
                 threshold: float, webhook_port: int | None = None, group: str = "sentinel",
                 kafka: dict | None = None, stream: dict | None = None) -> tuple[Path, Config]:
    """The demo config with the test's broker, model, ports and fast Kafka settings."""
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["model"] = {"path": str(model_dir)}
    raw["state"] = {"dir": str(state_dir)}
    raw["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    raw["kafka"] = {"bootstrap_servers": bootstrap, "topic": topic, "group_id": group,
                    "session_timeout": f"{FAST_GROUP['session_timeout_ms'] / 1000}s",
                    "poll_timeout": "0.2s", **(kafka or {})}
    raw["stream"] = {**raw.get("stream", {}), **(stream or {})}
    alerting = raw["alerting"]
    alerting["threshold"] = threshold
    alerting["resolve_threshold"] = "auto"
    alerting["delivery"] = {"initial_backoff": "0.1s", "max_backoff": "0.5s"}
    alerting["webhooks"] = ([{"url": f"http://127.0.0.1:{webhook_port}/alerts", "timeout": "2s"}]
                            if webhook_port else [])
    path.write_text(yaml.safe_dump(raw))
    return path, parse_config(raw, str(path))


# --- Kafka -----------------------------------------------------------------------------------

def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    count = 0
    for key, value in messages:
        producer.send(topic, key=key, value=value)
        count += 1
    producer.flush()
    producer.close()
    return count


def keyed(samples: Iterable[dict]) -> list[tuple[bytes, bytes]]:
    return [(s["service"].encode(), json.dumps(s, separators=(",", ":")).encode()) for s in samples]


def committed_offsets(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    """The group's committed offsets per partition (0 where nothing was committed)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return {tp.partition: consumer.committed(tp) or 0 for tp in partitions}
    finally:
        consumer.close(autocommit=False)


def end_offsets(bootstrap: str, topic: str, total: int) -> dict[int, int]:
    """Per partition, the offset after its last record, read back from the records: tansu
    0.6 answers ListOffsets(latest) with the start of the last record batch."""
    ends: dict[int, int] = defaultdict(int)
    for record in consume_all(bootstrap, topic, total):
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    return dict(ends)


def consume_all(bootstrap: str, topic: str, expected: int, timeout_seconds: float = 10.0) -> list:
    """Every record of `topic` (no group), waiting until `expected` have come."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    records: list = []
    try:
        deadline = time.monotonic() + timeout_seconds
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records += batch
    finally:
        consumer.close(autocommit=False)
    return records


# --- what the backtest says the daemon must do -----------------------------------------------

@dataclass
class Expected:
    transitions: list[AlertTransition]
    scored: set[tuple[str, int]]  # (service, ts) of every window the stream closes

    @property
    def keys(self) -> set[str]:
        """The Idempotency-Keys the receiver must see."""
        return {f"{t.episode_key}-{t.state}" for t in self.transitions}


def expected(config: Config, model_dir: Path, samples: list[dict]) -> Expected:
    """`sentinel.training.backtest.replay` on the same samples, model and thresholds, cut where a live
    stream stops: a bucket closes only once its service's watermark passed it (the backtest
    also flushes the last open buckets at the end of its file)."""
    model = load_model(model_dir, config)
    decoded = [decode(json.dumps(s)) for s in samples]
    good = [s for s in decoded if isinstance(s, Sample)]
    run = replay(config, model.scorer, good, model.alerting(config))
    newest: dict[str, float] = {}
    for s in good:
        newest[s.service] = max(newest.get(s.service, 0.0), s.ts)

    def closed(service: str, ts: int) -> bool:
        watermark = newest[service] - config.stream.allowed_lateness_seconds
        return ts + config.step_seconds <= watermark

    scores: list[Score] = [s for s in run.scores if closed(s.service, s.ts)]
    return Expected([t for t in run.transitions if closed(t.service, t.ts)],
                    {(s.service, s.ts) for s in scores})


# --- a real webhook receiver -----------------------------------------------------------------





# --- metrics and probes over HTTP ------------------------------------------------------------

class Scrape:
    def __init__(self, text: str) -> None:
        self.samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                        for family in text_string_to_metric_families(text)
                        for s in family.samples}

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def labels(self, name: str, label: str) -> set[str]:
        return {dict(key)[label] for (n, key) in self.samples if n == name and label in dict(key)}


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(port: int) -> Scrape | None:
    try:
        status, body = http_get(port, "/metrics")
    except OSError:  # not listening yet, or gone
        return None
    return Scrape(body.decode()) if status == 200 else None


def readiness(port: int) -> dict:
    """The /readyz body plus its HTTP status as `code` (None: nothing listens yet)."""
    try:
        status, body = http_get(port, "/readyz")
    except OSError:
        return {"code": None, "failing": None}
    return {**json.loads(body), "code": status}


# --- daemons ---------------------------------------------------------------------------------

class DaemonProcess:
    """`python -m sentinel --log-level debug run --config PATH`, logs (JSON lines) to a file."""

    def __init__(self, config_path: Path, config: Config, log_path: Path) -> None:
        self.config_path, self.config, self.log_path = config_path, config, log_path
        self.port = config.metrics.port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sentinel", "--log-level", "debug", "run", "--config",
                 str(self.config_path)], cwd=ROOT, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, env=env)
        return self

    def scrape(self) -> Scrape | None:
        self.check_alive()
        return scrape(self.port)

    def metric(self, name: str, **labels: str) -> float:
        scraped = self.scrape()
        return scraped.get(name, **labels) if scraped else 0.0

    def readiness(self) -> dict:
        self.check_alive()
        return readiness(self.port)

    def wait_ready(self, timeout_seconds: float = 30.0) -> dict:
        return wait_until(lambda: (r := self.readiness())["code"] == 200 and r,
                          timeout_seconds, lambda: f"readiness; log:\n{self.log_tail()}", 0.1)

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"sentinel run exited {self.process.returncode}:\n"
                                 f"{self.log_tail()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout_seconds: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout_seconds)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def events(self, event: str) -> list[dict]:
        """The structured log lines with this `event` field (score, batch, alert, ...)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except ValueError:  # being written, or torn by a SIGKILL
                    continue
                if doc.get("event") == event:
                    out.append(doc)
        return out

    def log_tail(self, n_lines: int = 30) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n_lines:])


class InProcessDaemon:
    """The same App as `sentinel run`, on a thread of the test process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = config.metrics.port
        self.registry = CollectorRegistry()
        self.app = App.create(config, self.registry)
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, name="sentinel-under-test", daemon=True)

    def _run(self) -> None:
        self.exit_code = self.app.run()

    def start(self) -> InProcessDaemon:
        self.thread.start()
        return self

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def stop(self, timeout_seconds: float = 15.0) -> int | None:
        self.app.stop()
        self.thread.join(timeout_seconds)
        return self.exit_code


def config_for(tmp_path: Path, broker, trained, name: str = "sentinel", **options):
    """`<name>.yaml` with its own state directory `<name>-state`."""
    model_dir, threshold = trained
    return write_config(tmp_path / f"{name}.yaml", bootstrap=broker.bootstrap,
                        model_dir=model_dir, state_dir=tmp_path / f"{name}-state",
                        threshold=threshold, **options)
