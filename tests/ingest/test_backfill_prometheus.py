"""`sentinel backfill` against a real Prometheus: history written with `promtool tsdb
create-blocks-from openmetrics`, backfilled, trained on, and the model loads.

Needs the Debian package `prometheus` (/usr/bin/prometheus, /usr/bin/promtool; .ci/run installs
it); skipped with that reason where it is absent.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from sentinel.config.load import parse_config
from sentinel.ingest.backfill import backfill
from sentinel.model.artifact import load_model
from sentinel.sim import simulate
from sentinel.training.train import train
from tests.testkit.broker import free_port
from tests.testkit.daemon import BASE_CONFIG
from tests.testkit.wait import wait_until

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("promtool")),
    reason="Prometheus is not installed (Debian package `prometheus`: /usr/bin/prometheus and "
           "/usr/bin/promtool); .ci/run installs it")

STEP = 10
FEATURES = ("qps", "p99_ms", "error_rate", "cpu")


def history(start: int) -> dict[tuple[str, int], dict[str, float]]:
    """Simulated samples (4 services, a day, failures included) on the step grid, last one wins."""
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for sample in simulate.simulate(services=4, days=1, seed=9, start_ts=start).samples:
        ts = int(sample["ts"] // STEP) * STEP
        values = {k: v for k, v in sample["metrics"].items()
                  if isinstance(v, int | float) and math.isfinite(v)}
        rows.setdefault((sample["service"], ts), {}).update(values)
    return rows


def openmetrics(rows: dict[tuple[str, int], dict[str, float]], start: int) -> str:
    out = []
    for name in FEATURES:
        out.append(f"# TYPE sim_{name} gauge")
        out += [f'sim_{name}{{job="{service}"}} {values[name]!r} {ts}'
                for (service, ts), values in sorted(rows.items(), key=lambda kv: kv[0][1])
                if name in values]
    # an hour of a counter (5/s on each of two instances) and a histogram (per 10 s: 60 requests
    # under 0.1 s, 90 under 0.5 s, of 100) for one service
    hour = range(start, start + 3600, STEP)
    out.append("# TYPE http_requests counter")
    out += [f'http_requests_total{{instance="{inst}",job="gateway"}} {5 * (ts - start)} {ts}'
            for inst in ("a", "b") for ts in hour]
    out.append("# TYPE http_request_duration_seconds histogram")
    for ts in hour:
        n = (ts - start) // STEP
        for le, count in (("0.1", 60 * n), ("0.5", 90 * n), ("+Inf", 100 * n)):
            out.append(f'http_request_duration_seconds_bucket{{job="gateway",le="{le}"}} {count} {ts}')
        out.append(f'http_request_duration_seconds_count{{job="gateway"}} {100 * n} {ts}')
        out.append(f'http_request_duration_seconds_sum{{job="gateway"}} {10 * n} {ts}')
    return "\n".join(out) + "\n# EOF\n"


@contextlib.contextmanager
def serving(tmp_path: Path, text: str):
    """The URL of a Prometheus serving the OpenMetrics `text` from TSDB blocks."""
    data = tmp_path / "tsdb"
    source = tmp_path / "history.om"
    source.write_text(text)
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
                   check=True, capture_output=True, timeout=300)
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {}\n")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    # a 5 s lookback: a step without a sample stays empty instead of repeating the last one
    process = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d",
         "--query.lookback-delta=5s"], stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1).status == 200
        except OSError:
            return False
    try:
        wait_until(ready, 60, "Prometheus ready")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture
def prometheus(tmp_path: Path):
    """(URL, first ts, rows written): a Prometheus serving a day of history from TSDB blocks."""
    start = (int(time.time()) - 86400 - 7200) // 3600 * 3600
    rows = history(start)
    with serving(tmp_path, openmetrics(rows, start)) as url:
        yield url, start, rows


def test_incidents_from_a_real_prometheus_alerts_series(tmp_path: Path) -> None:
    """ALERTS as Prometheus stores its rules' alerts: 1 while firing, no sample otherwise."""
    from sentinel.ingest.backfill import backfill_incidents
    from sentinel.training.incidents import read_incidents

    start = (int(time.time()) - 7200) // 3600 * 3600
    firing = {("checkout", "HighLatency", "page"): [(600, 900), (1800, 1860)],
              ("payment", "Down", "page"): [(1200, 1500)],
              ("search", "Slow", "ticket"): [(300, 400)]}
    lines = ["# TYPE ALERTS gauge"]
    for (job, name, severity), spans in firing.items():
        lines += [f'ALERTS{{alertname="{name}",alertstate="firing",job="{job}",'
                  f'severity="{severity}"}} 1 {start + t}'
                  for a, b in spans for t in range(a, b, STEP)]
    lines.sort(key=lambda line: int(line.rsplit(" ", 1)[1]) if line[0] != "#" else 0)
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["input"] = {"service_label": "job"}
    with serving(tmp_path, "\n".join(lines) + "\n# EOF\n") as url:
        summary = backfill_incidents(parse_config(raw), url, str(start), str(start + 3600),
                                     tmp_path / "incidents.csv",
                                     'ALERTS{alertstate="firing",severity="page"}', chunk="20m")
    assert summary["incidents"] == 3
    got = [(i.service, i.start_ts - start, i.end_ts - start, i.cause)
           for i in read_incidents(tmp_path / "incidents.csv")]
    assert got == [("checkout", 600, 900, "HighLatency"), ("payment", 1200, 1500, "Down"),
                   ("checkout", 1800, 1860, "HighLatency")]


@pytest.mark.slow
def test_backfill_from_real_prometheus_equals_its_series_and_trains_a_model_that_loads(prometheus, tmp_path):
    url, start, rows = prometheus
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    for feature in raw["features"]:
        feature["source"] = {"metric": f"sim_{feature['name']}"}
    raw["training"] = {"epochs": 2, "lstm_units": [8, 4], "negative_stride": 4, "validation_fraction": 0.3}
    raw["input"] = {"service_label": "job", "metrics": [
        {"name": "rps", "source": {"metric": "http_requests_total", "counter": True}},
        {"name": "p50_ms", "source": {"metric": "http_request_duration_seconds",
                                      "histogram_quantile": 0.5, "scale": 1000}}]}
    config = parse_config(raw)
    out = tmp_path / "history"
    end = start + 86400
    summary = backfill(config, url, str(start), str(end), out, chunk="6h")
    assert (summary["chunks"], summary["written"]) == (4, 4)

    got: dict[tuple[str, int], dict[str, float]] = {}
    for path in sorted(out.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            got[(sample["service"], int(sample["ts"]))] = sample["metrics"]
    features = {key: values for key, metrics in got.items()
                if (values := {k: v for k, v in metrics.items() if k in FEATURES})}
    assert features == {key: values for key, values in rows.items() if start <= key[1] < end}

    # a full rate window inside the hour of the counter and the histogram (at its edges
    # Prometheus's rate extrapolates over fewer points)
    gateway = [got[("gateway", ts)] for ts in range(start + 60, start + 3600, STEP)]
    assert all(m["rps"] == pytest.approx(10.0) for m in gateway)  # 5/s on each of 2 instances
    # per step 60 of 100 under 0.1 s: the median is 0.1 s x 50 / 60
    assert all(m["p50_ms"] == pytest.approx(1000 * 0.1 * 50 / 60) for m in gateway)

    train(config, [out], tmp_path / "model")
    model = load_model(tmp_path / "model", config)
    assert model.scorer is not None
