"""The quick start: a local Kafka-protocol broker (tansu), the simulator streaming a sale day
into it, the daemon (`sentinel run`) scoring it with the shipped demo model, and a webhook
receiver that prints every alert it gets. Ctrl-C stops it all.

The demo model (sentinel/sim/demo_model/) is trained by `scripts/train-demo-model` and
shipped, so nothing trains here. Before streaming, the day is replayed offline through the
daemon's own pipeline with that model, and the stream starts 20 simulated minutes before
the first alert episode that also resolves soon, so that a firing and then a resolve reach
the webhook receiver within two minutes (at the default speed). The daemon's config is
written to var/demo/sentinel.yaml and the model copied to var/demo/model: run
`sentinel models list --config var/demo/sentinel.yaml` or `sentinel backtest --config
var/demo/sentinel.yaml --model var/demo/model ...` against them afterwards.

Nothing here is needed in production: it wires the real parts together on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from sentinel.config.load import load_config
from sentinel.sim.localbroker import TansuBroker, free_port

ROOT = Path(__file__).resolve().parents[2]  # the repository (config/, var/)
STATE = ROOT / "var" / "demo"
DEMO_MODEL = Path(__file__).resolve().parent / "demo_model"
LEAD_IN_SECONDS = 20 * 60  # stream from this long before the first firing (a window is 10 min)
DEMO_SERVICES = 6
RESOLVE_BUDGET_SECONDS = 90 * 60  # event time from the stream's start to the resolve: 4.5 min


STREAMING_SINCE = [math.nan]  # time.monotonic() when streaming began, for the receiver's lines


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
                f"key={self.headers.get('Idempotency-Key')} "
                f"({time.monotonic() - STREAMING_SINCE[0]:.0f} s after streaming began)")
            summary = alert.get("annotations", {}).get("summary")
            if summary:  # in words, with the drivers and a dependency or planned sale if any
                say(f"    {summary}")
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


def ensure_model(model_dir: Path) -> str:
    """Copy the shipped demo model to `model_dir` unless that version is there already."""
    shipped = json.loads((DEMO_MODEL / "metadata.json").read_text())["version"]
    current = model_dir / "metadata.json"
    if not current.exists() or json.loads(current.read_text()).get("version") != shipped:
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.copytree(DEMO_MODEL, model_dir)
    say(f"using the shipped demo model {shipped} (scripts/train-demo-model trains it) in "
        f"{model_dir}")
    return shipped


def demo_stream(config_path: Path, model_dir: Path, seed: int, speed: float
                ) -> tuple[list[dict], float, float]:
    """(samples, first firing ts, its resolve ts): a simulated day from 20 minutes before the
    first alert episode that, replayed from there through the daemon's pipeline with the
    demo model, fires and resolves within RESOLVE_BUDGET_SECONDS of the stream's start."""
    from sentinel.core.samples import Sample
    from sentinel.model.artifact import load_model
    from sentinel.sim.simulate import simulate, write_calendar
    from sentinel.training.backtest import replay

    config = load_config(config_path)
    model = load_model(model_dir, config)
    sim = simulate(DEMO_SERVICES, 1, seed=seed)
    if config.calendar.file:  # the day's announced sales: alerts during them say so
        write_calendar(sim.calendar, Path(config.calendar.file))
    samples = sorted(sim.samples, key=lambda s: s["ts"])

    def episode(begin: float) -> tuple[float, float] | None:
        part = [Sample(s["service"], float(s["ts"]),
                       {k: v for k, v in s["metrics"].items() if v is not None})
                for s in samples if begin <= s["ts"] < begin + RESOLVE_BUDGET_SECONDS]
        run = replay(config, model.scorer, [x for x in part if x.metrics], model.alerting(config))
        fired = next((t for t in run.transitions if t.state == "firing"), None)
        if fired is None:
            return None
        resolved = next((t for t in run.transitions if t.state == "resolved"
                         and t.service == fired.service and t.ts > fired.ts), None)
        return None if resolved is None else (fired.ts, resolved.ts)

    first_ts = samples[0]["ts"]
    whole = replay(config, model.scorer, [Sample(s["service"], float(s["ts"]), {
        k: v for k, v in s["metrics"].items() if v is not None}) for s in samples
        if any(v is not None for v in s["metrics"].values())], model.alerting(config))
    for fired in (t for t in whole.transitions if t.state == "firing"):
        begin = max(first_ts, fired.ts - LEAD_IN_SECONDS)
        found = episode(begin)
        if found is not None:
            return [s for s in samples if s["ts"] >= begin], found[0], found[1]
    say(f"no alert episode in the replay of seed {seed}: streaming the day from its start")
    return samples, math.nan, math.nan


def write_config(path: Path, bootstrap: str, webhook_port: int, metrics_port: int) -> None:
    doc = yaml.safe_load((ROOT / "config" / "sentinel.yaml").read_text())
    doc["kafka"]["bootstrap_servers"] = bootstrap
    doc.setdefault("kafka", {})["session_timeout"] = "6s"
    doc["alerting"]["webhooks"] = [{"url": f"http://127.0.0.1:{webhook_port}/alerts"}]
    doc["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    doc["model"] = {"path": str(STATE / "model")}
    doc["state"] = {"dir": str(STATE / "state")}
    # the simulator's dependencies: a model trained with a topology sees a cascade coming
    # from the dependency that starts it (a model trained without one ignores them)
    from sentinel.sim.simulate import topology as topology_of
    from sentinel.sim.simulate import write_topology

    topology = path.parent / "topology.yaml"
    write_topology(topology_of(DEMO_SERVICES), topology)
    doc["topology_file"] = str(topology)
    doc["calendar"] = {"file": str(path.parent / "sales.yaml")}  # written by demo_stream
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def print_risks(metrics_port: int) -> None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read()
    except OSError:
        return
    risks = re.findall(r'sentinel_failure_risk\{service="([^"]+)"\} ([0-9.e+-]+)', text.decode())
    if risks:
        say("risk  " + "  ".join(f"{s}={float(r):.2f}" for s, r in sorted(risks)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/quickstart", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", type=float, default=20.0,
                        help="event-time seconds streamed per wall second (default: 20)")
    parser.add_argument("--seed", type=int, default=5,
                        help="simulation seed of the streamed day (default: 5)")
    parser.add_argument("--port", type=int, default=0,
                        help="broker port (default: a free one)")
    parser.add_argument("--metrics-port", type=int, default=9108,
                        help="port of the daemon's /metrics, /healthz and /readyz (default: 9108; "
                             "0: a free one)")
    return parser.parse_args(argv)


def _produce(stop: threading.Event, samples: list[dict], bootstrap: str, speed: float) -> None:
    from sentinel.sim.simulate import produce_kafka

    # the stream ends early once `stop` is set, so the producer flushes and closes while the
    # broker is still there
    stream = itertools.takewhile(lambda _: not stop.is_set(), samples)
    try:
        produce_kafka(stream, bootstrap, "sentinel.metrics", speed=speed)
    except Exception as exc:  # the broker went away first: no traceback on Ctrl-C
        if not stop.is_set():
            say(f"the producer stopped: {exc}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (kill, timeout, systemd) stops everything as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    STATE.mkdir(parents=True, exist_ok=True)
    config_path = STATE / "sentinel.yaml"
    webhook_port = free_port()
    metrics_port = args.metrics_port or free_port()
    started = time.monotonic()
    with TansuBroker(port=args.port or None, log_dir=STATE) as broker:
        say(f"Kafka-protocol broker (tansu) on {broker.bootstrap}; log {STATE / 'tansu.log'}")
        broker.create_topic("sentinel.metrics", partitions=3)
        write_config(config_path, broker.bootstrap, webhook_port, metrics_port)
        say(f"daemon config: {config_path}")
        ensure_model(STATE / "model")
        samples, fire_ts, resolve_ts = demo_stream(config_path, STATE / "model", args.seed,
                                                   args.speed)
        if not math.isnan(fire_ts):
            say(f"streaming {len(samples)} samples of a simulated sale day at {args.speed:g}x; "
                f"the replay says: a firing about {(fire_ts - samples[0]['ts']) / args.speed:.0f} s "
                f"from now, its resolve about {(resolve_ts - samples[0]['ts']) / args.speed:.0f} s")
        with receiver(webhook_port):
            say(f"webhook receiver on 127.0.0.1:{webhook_port}; metrics on "
                f"http://127.0.0.1:{metrics_port}/metrics")
            daemon = subprocess.Popen([sys.executable, "-m", "sentinel", "run", "--config",
                                       str(config_path)], env={**os.environ, "PYTHONUNBUFFERED": "1"})
            stop = threading.Event()
            producer = threading.Thread(target=_produce, daemon=True, args=(
                stop, samples, broker.bootstrap, args.speed))
            producer.start()
            STREAMING_SINCE[0] = time.monotonic()
            say(f"streaming started {time.monotonic() - started:.0f} s after the start")
            try:
                while daemon.poll() is None:
                    time.sleep(5)
                    print_risks(metrics_port)
            except KeyboardInterrupt:
                say("stopping")
            finally:
                stop.set()
                with contextlib.suppress(KeyboardInterrupt):
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
