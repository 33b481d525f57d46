"""What the end-to-end benchmarks share: a model artifact, a stream in a real broker, a daemon.

Nothing here is timed by itself; `end_to_end.py` and `alert_latency.py` time what they need.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sentinel.daemon.kafka_client import make_producer
from sentinel.sim.localbroker import free_port

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "config" / "sentinel.yaml"
STEP_SECONDS = 10


def write_model(out: Path, config_path: Path, fires_on: str | None = None) -> None:
    """A model of the config's shape saved as `sentinel train` would, untrained (scoring costs
    the same whatever the weights). Runs in a child process so that only the benchmark's
    helper, never the daemon, imports TensorFlow.

    With `fires_on` (a feature name) the weights are set by hand instead: the risk is ~1 when
    that feature's scaled value at the window's last step is above 0.25 and ~0 below it (one
    unit per layer carries it, with the forget gate shut), so a benchmark decides which
    services alert."""
    code = f"""
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, numpy as np
from pathlib import Path
from sentinel.config.load import load_config
from sentinel.core.features import Scaler, tracked_metrics
from sentinel.training.keras_model import build_model
from sentinel.model.artifact import save_model, schema_of
config = load_config({str(config_path)!r})
keras.utils.set_random_seed(0)
model = build_model(config.window_steps, len(config.features), config.training.lstm_units)
fires_on = {fires_on!r}
if fires_on:
    k1, r1, b1, k2, r2, b2, dk, db = (np.zeros_like(w) for w in model.get_weights())
    u1, u2 = config.training.lstm_units
    feature = config.feature_names.index(fires_on)
    for bias, u in ((b1, u1), (b2, u2)):  # input and output gates open, forget gate shut
        bias[:u], bias[u: 2 * u], bias[3 * u:] = 10.0, -10.0, 10.0
    k1[feature, 2 * u1], b1[2 * u1] = 20.0, -5.0  # candidate of unit 0: tanh(20 x - 5)
    k2[0, 2 * u2] = 3.0
    dk[0, 0] = 10.0
    model.set_weights([k1, r1, b1, k2, r2, b2, dk, db])
n = len(config.features)
scaler = Scaler((0.0,) * n, (1.0,) * n)
metadata = {{**schema_of(config), "metrics": list(tracked_metrics(config)),
            "lstm_units": list(config.training.lstm_units)}}
save_model(model, scaler, metadata, Path({str(out)!r}))
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def write_config(path: Path, *, bootstrap: str, topic: str, model_dir: Path, state_dir: Path,
                 services: int, window: str | None = None, threshold: float = 0.999,
                 webhook_url: str | None = None, extra: dict | None = None) -> tuple[Path, str]:
    """The shipped config with the benchmark's broker, model and ports; returns (path, /metrics URL).

    Changed from config/sentinel.yaml only where the run needs it: `stream.max_services`
    (room for every service), `kafka.session_timeout` 2 s (tansu holds a group join for about
    half of it), the alert threshold (few alerts: their fsynced outbox writes are measured by
    alert_latency.py) and, with `window`, the window length."""
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    if window:
        raw["window"] = window
    port = free_port()
    raw["model"] = {"path": str(model_dir)}
    raw["state"] = {"dir": str(state_dir)}
    raw["metrics"] = {"listen": f"127.0.0.1:{port}"}
    raw["kafka"] = {**raw["kafka"], "bootstrap_servers": bootstrap, "topic": topic,
                    "group_id": "bench", "session_timeout": "2s", "poll_timeout": "0.2s"}
    raw["stream"] = {**raw["stream"], "max_services": max(services, 1) * 2}
    raw["alerting"] = {**raw["alerting"], "threshold": threshold, "resolve_threshold": "auto",
                       "webhooks": [{"url": webhook_url, "timeout": "2s"}] if webhook_url else []}
    for key, value in (extra or {}).items():
        raw[key] = {**raw.get(key, {}), **value}
    path.write_text(yaml.safe_dump(raw))
    return path, f"http://127.0.0.1:{port}/metrics"


def messages(services: range, first_step: int, steps: int, start_ts: int, fail_period: int = 0,
             fail_steps: int = 1) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each service's sample, step after step, as a live stream arrives.

    With `fail_period`, from `first_step` on, service i has an error rate of 0.5 at step k when
    i % fail_period == ((k - first_step) // fail_steps) % fail_period: a new group of services
    fails every `fail_steps` steps, for `fail_steps` steps."""
    rng = np.random.default_rng(first_step * 1_000_003 + services.start)
    n = len(services)
    base = rng.uniform(50, 5000, n)
    keys = [f"svc-{i:06d}".encode() for i in services]
    for step in range(first_step, first_step + steps):
        ts = start_ts + STEP_SECONDS * step
        qps = base * rng.uniform(0.9, 1.1, n)
        p99 = rng.uniform(40, 300, n)
        err = rng.uniform(0, 0.01, n)
        cpu = rng.uniform(0.2, 0.8, n)
        if fail_period:
            group = ((step - first_step) // fail_steps) % fail_period
            err[np.asarray(services) % fail_period == group] = 0.5
        for j, key in enumerate(keys):
            yield key, (f'{{"service":"{key.decode()}","ts":{ts},"metrics":{{"qps":{qps[j]:.1f},'
                        f'"p99_ms":{p99[j]:.1f},"error_rate":{err[j]:.5f},"cpu":{cpu[j]:.3f}}}}}'
                        ).encode()


def produce(bootstrap: str, topic: str, services: range, first_step: int, steps: int,
            start_ts: int, rate: float = 0.0, fail_period: int = 0, fail_steps: int = 1,
            times_out: str | None = None) -> int:
    """Produce `steps` steps of `services`; `rate` > 0 paces it to that many samples/s.

    With `times_out`, the wall-clock time (time.time()) each sample was handed to the client
    is saved there as a (steps, services) array (.npy)."""
    producer = make_producer(bootstrap, linger_ms=5 if rate else 20, batch_size=512 * 1024, acks=1)
    started, count = time.monotonic(), 0
    sent: list[float] = []
    for key, value in messages(services, first_step, steps, start_ts, fail_period, fail_steps):
        producer.send(topic, key=key, value=value)
        if times_out:
            sent.append(time.time())
        count += 1
        if rate and count % 1000 == 0:
            ahead = count / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush()
    producer.close()
    if times_out:
        np.save(times_out, np.array(sent).reshape(steps, len(services)))
    return count


def produce_parallel(bootstrap: str, topic: str, services: int, steps: int, start_ts: int,
                     processes: int = 2) -> int:
    """Pre-produce `steps` steps with several producer processes, a slice of the services each
    (each service's samples stay in ts order: its watermark never jumps ahead)."""
    cuts = [services * i // processes for i in range(processes + 1)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return sum(pool.starmap(produce, [(bootstrap, topic, range(a, b), 0, steps, start_ts)
                                          for a, b in itertools.pairwise(cuts)]))


def start_daemon(config_path: Path, log_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sentinel", "run", "--config", str(config_path)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=log_path.open("w"))


def scrape(url: str) -> dict[str, float]:
    """Every sample of /metrics by name, labelled series summed (one figure per name)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sentinel_failure_risk":
                continue  # one per service: only their count matters
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    out["risk_series"] = text.count("\nsentinel_failure_risk{")
    return out


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tf_loaded(pid: int) -> bool:
    """Whether the process mapped TensorFlow's shared library (it should not when serving)."""
    return "libtensorflow" in Path(f"/proc/{pid}/maps").read_text()


def dump(figures: dict) -> str:
    return json.dumps(figures, separators=(",", ":"))
