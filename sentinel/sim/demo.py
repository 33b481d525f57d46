"""The quick start: a local broker, a simulator feeding it, a first model, the daemon, and a
webhook receiver that prints what it gets. `scripts/quickstart` runs this; Ctrl-C stops all.

    python -m sentinel.sim.demo [--speed 20] [--port 9092]

Nothing here is needed in production: it wires the real parts together on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from sentinel.config.load import load_config
from sentinel.sim.localbroker import TansuBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "var" / "demo"
DEMO_EPOCHS = 6
LEAD_IN_SECONDS = 20 * 60  # stream from this long before the first failure (a window is 10 min)


def say(message: str) -> None:
    print(f"\033[1m[demo]\033[0m {message}", flush=True)


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        for alert in body.get("alerts", []):
            labels = alert.get("labels", {})
            say(f"\033[31mwebhook got {alert.get('status', '?').upper()}\033[0m "
                f"{labels.get('alertname')} service={labels.get('service')} "
                f"risk={alert.get('annotations', {}).get('risk')} startsAt={alert.get('startsAt')} "
                f"key={self.headers.get('Idempotency-Key')}")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def receiver(port: int) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()


def ensure_model(config_path: Path, model_dir: Path) -> None:
    if (model_dir / "metadata.json").exists():
        say(f"using the model in {model_dir}")
        return
    from sentinel.sim.simulate import simulate, write_jsonl
    from sentinel.training.train import train

    say(f"no model in {model_dir}: simulating 6 services x 2 days and training a first, short "
        f"demo model ({DEMO_EPOCHS} epochs at most, about a minute; `sentinel train` makes a "
        "better one)")
    config = load_config(config_path)
    config = replace(config, training=replace(config.training, epochs=DEMO_EPOCHS))
    with tempfile.TemporaryDirectory() as tmp:
        history = Path(tmp) / "history.jsonl"
        write_jsonl(simulate(6, 2, seed=11).samples, history)
        summary = train(config, [history], model_dir)
    say(f"model {summary['version']} trained in {summary['seconds']} s; "
        f"validation: {json.dumps(summary['validation'])}")


def demo_stream(seed: int) -> tuple[list[dict], float]:
    """A simulated day, from a little before its first failure on."""
    from sentinel.config.load import load_config as _load
    from sentinel.sim.simulate import simulate, write_jsonl
    from sentinel.training.history import label, read_series

    samples = simulate(6, 1, seed=seed).samples
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day.jsonl"
        write_jsonl(samples, path)
        config = _load(ROOT / "config" / "sentinel.yaml")
        series, _ = read_series([path], config)
    starts = [e.start_ts for s in series.values() for e in label(s, config).events]
    first = min(starts, default=samples[0]["ts"] + LEAD_IN_SECONDS)
    begin = max(samples[0]["ts"], first - LEAD_IN_SECONDS)
    return [s for s in samples if s["ts"] >= begin], first


def write_config(path: Path, bootstrap: str, webhook_port: int, metrics_port: int) -> None:
    doc = yaml.safe_load((ROOT / "config" / "sentinel.yaml").read_text())
    doc["kafka"]["bootstrap_servers"] = bootstrap
    doc.setdefault("kafka", {})["session_timeout"] = "6s"
    doc["alerting"]["webhooks"] = [{"url": f"http://127.0.0.1:{webhook_port}/alerts"}]
    doc["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    doc["model"] = {"path": str(STATE / "model")}
    doc["state"] = {"dir": str(STATE / "state")}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def print_risks(metrics_port: int) -> None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read()
    except OSError:
        return
    risks = re.findall(r'sentinel_failure_risk\{service="([^"]+)"\} ([0-9.e+-]+)', text.decode())
    if risks:
        say("risk  " + "  ".join(f"{s}={float(r):.2f}" for s, r in sorted(risks)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=20.0,
                        help="event-time seconds streamed per wall second (default 20)")
    parser.add_argument("--seed", type=int, default=5, help="simulation seed of the streamed day")
    parser.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    args = parser.parse_args()
    STATE.mkdir(parents=True, exist_ok=True)
    config_path = STATE / "sentinel.yaml"
    webhook_port, metrics_port = free_port(), 9108
    with TansuBroker(port=args.port or None, log_dir=STATE) as broker:
        say(f"Kafka-protocol broker (tansu) on {broker.bootstrap}; log {STATE / 'tansu.log'}")
        broker.create_topic("sentinel.metrics", partitions=3)
        write_config(config_path, broker.bootstrap, webhook_port, metrics_port)
        ensure_model(config_path, STATE / "model")
        samples, first_failure = demo_stream(args.seed)
        say(f"streaming {len(samples)} samples of a simulated sale day at {args.speed:g}x; the "
            f"first failure is {(first_failure - samples[0]['ts']) / 60:.0f} simulated minutes in, "
            f"about {(first_failure - samples[0]['ts']) / args.speed:.0f} s from now")
        with receiver(webhook_port):
            say(f"webhook receiver on 127.0.0.1:{webhook_port}; metrics on "
                f"http://127.0.0.1:{metrics_port}/metrics")
            daemon = subprocess.Popen([sys.executable, "-m", "sentinel", "run", "--config",
                                       str(config_path)], env={**os.environ, "PYTHONUNBUFFERED": "1"})
            from sentinel.sim.simulate import produce_kafka

            stop = threading.Event()
            # the stream ends early once `stop` is set, so the producer flushes and closes
            # while the broker is still there
            stream = itertools.takewhile(lambda _: not stop.is_set(), samples)
            producer = threading.Thread(target=produce_kafka, daemon=True, args=(
                stream, broker.bootstrap, "sentinel.metrics"), kwargs={"speed": args.speed})
            producer.start()
            try:
                while daemon.poll() is None:
                    time.sleep(5)
                    print_risks(metrics_port)
            except KeyboardInterrupt:
                say("stopping")
            finally:
                stop.set()
                producer.join(timeout=10)
                if daemon.poll() is None:
                    daemon.send_signal(signal.SIGTERM)
                    try:
                        daemon.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        daemon.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
