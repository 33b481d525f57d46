"""`sentinel backfill` against a real HTTP server that answers like Prometheus's query_range."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from sentinel.cli import main
from sentinel.config.load import parse_config
from sentinel.config.schema import SourceSpec
from sentinel.errors import ConfigError, DataError
from sentinel.ingest.backfill import backfill, promql_for
from tests.testkit.daemon import BASE_CONFIG
from tests.testkit.http import Received, Reply

T0 = 1763899200  # on the 10 s grid, and on an hour


def config(**input_section: object):
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["features"] = [{"name": "qps", "source": {"metric": "http_requests_total", "counter": True}},
                       {"name": "cpu"}]
    raw["failure"] = {"any": [{"metric": "errors", "op": ">", "value": 1}]}
    raw["input"] = {"service_label": "job", "prometheus": {"rate_window": "1m"},
                    "metrics": [{"name": "errors", "source": {"promql": "sum by (job) (errors)"}}],
                    **input_section}
    return parse_config(raw)


def prometheus_answer(request: Received) -> Reply:
    """A matrix: every query's value at ts is ts - T0 (+ 0.5 for cpu), for services a and b."""
    params = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
    start, end, step = float(params["start"]), float(params["end"]), int(params["step"].rstrip("s"))
    offset = 0.5 if params["query"] == "sum by (job) (cpu)" else 0.0
    result = [{"metric": {"job": job}, "values": [[t, str(t - T0 + offset) if t % 60 else "NaN"]
                                                  for t in range(int(start), int(end) + 1, step)]}
              for job in ("a", "b")]
    result.append({"metric": {"instance": "no-job"}, "values": [[start, "1"]]})
    return Reply(200, body=json.dumps({"status": "success",
                                       "data": {"resultType": "matrix", "result": result}}).encode())


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(out.glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def test_backfill_writes_a_jsonl_chunk_per_range_and_resumes_where_it_stopped(receiver, tmp_path):
    receiver.respond = prometheus_answer
    out = tmp_path / "history"
    summary = backfill(config(), receiver.url(""), str(T0), str(T0 + 120), out, chunk="1m")
    assert summary == {"chunks": 2, "written": 2, "skipped": 0, "samples": 20, "out": str(out)}
    assert sorted(p.name for p in out.iterdir()) == [f"backfill-{T0}-{T0 + 60}.jsonl",
                                                    f"backfill-{T0 + 60}-{T0 + 120}.jsonl"]
    got = lines(out)
    assert got[:3] == [{"service": "a", "ts": T0 + 10, "metrics": {"qps": 10.0, "cpu": 10.5, "errors": 10.0}},
                       {"service": "b", "ts": T0 + 10, "metrics": {"qps": 10.0, "cpu": 10.5, "errors": 10.0}},
                       {"service": "a", "ts": T0 + 20, "metrics": {"qps": 20.0, "cpu": 20.5, "errors": 20.0}}]
    assert {s["ts"] for s in got} == {T0 + 10 * i for i in range(12) if i % 6}  # NaN: no sample
    queries = {parse_qs(urlsplit(r.path).query)["query"][0] for r in receiver.received}
    assert queries == {"sum by (job) (rate(http_requests_total[60s]))", "sum by (job) (cpu)",
                       "sum by (job) (errors)"}
    assert len(receiver.received) == 6  # 3 queries x 2 chunks

    (out / f"backfill-{T0 + 60}-{T0 + 120}.jsonl").unlink()
    again = backfill(config(), receiver.url(""), str(T0), str(T0 + 120), out, chunk="1m")
    assert (again["written"], again["skipped"], len(receiver.received)) == (1, 1, 9)
    assert len(lines(out)) == 20


def test_backfill_retries_transient_failures_with_doubling_pauses(receiver, tmp_path):
    receiver.respond = prometheus_answer
    receiver.script = [Reply(503), Reply(429), Reply(500)]
    pauses: list[float] = []
    summary = backfill(config(), receiver.url(""), str(T0), str(T0 + 60), tmp_path, chunk="1h",
                       sleep=pauses.append)
    assert pauses == [1.0, 2.0, 4.0] and summary["samples"] == 10


def test_a_query_prometheus_rejects_stops_the_backfill_naming_the_metric(receiver, tmp_path):
    receiver.script = [Reply(400, body=b'{"status":"error","errorType":"bad_data","error":"parse error"}')]
    with pytest.raises(DataError, match=r"query of qps.*parse error"):
        backfill(config(), receiver.url(""), str(T0), str(T0 + 60), tmp_path)
    assert not list(tmp_path.glob("*.jsonl"))


def test_backfill_sends_the_bearer_token_from_its_file(receiver, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    receiver.respond = prometheus_answer
    cfg = config(prometheus={"bearer_token_file": str(token)})
    backfill(cfg, receiver.url(""), str(T0), str(T0 + 60), tmp_path / "out")
    assert receiver.received[0].headers["Authorization"] == "Bearer s3cret"


def test_failure_metrics_must_be_mapped_for_backfill(receiver, tmp_path):
    cfg = config(metrics=[])
    with pytest.raises(ConfigError) as caught:
        backfill(cfg, receiver.url(""), str(T0), str(T0 + 60), tmp_path)
    assert caught.value.key == "failure.any[0].metric"


@pytest.mark.parametrize("source, expected", [
    (SourceSpec(metric="up"), "sum by (job) (up)"),
    (SourceSpec(metric="cpu", aggregate="max", match=(("mode", "user|system"),)),
     'max by (job) (cpu{mode=~"user|system"})'),
    (SourceSpec(metric="reqs", counter=True, aggregate="mean", match=(("code", '5"'),)),
     'avg by (job) (rate(reqs{code=~"5\\""}[60s]))'),
    (SourceSpec(metric="lat", histogram_quantile=0.99, scale=1000),
     "(histogram_quantile(0.99, sum by (le, job) (rate(lat_bucket[60s])))) * 1000"),
    (SourceSpec(metric="x", promql="my_rule:ratio"), "my_rule:ratio"),
])
def test_promql_derived_from_a_source_computes_what_ingest_computes(source, expected):
    assert promql_for(source, "job", 60) == expected


def test_cli_backfill_prints_a_json_summary(receiver, tmp_path, capsys):
    receiver.respond = prometheus_answer
    path = tmp_path / "cfg.yaml"
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["features"] = [{"name": "cpu"}]
    raw["failure"] = {"any": [{"metric": "cpu", "op": ">", "value": 0.9}]}
    path.write_text(yaml.safe_dump(raw))
    code = main(["backfill", "--config", str(path), "--prometheus", receiver.url(""),
                 "--start", "2025-11-23T12:00:00Z", "--end", str(T0 + 60), "--out", str(tmp_path / "h")])
    assert code == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["samples"] == 10


@pytest.mark.parametrize("url", ["http://admin:pw@prometheus:9090", "prometheus:9090"])
def test_a_prometheus_url_with_credentials_or_without_a_scheme_is_refused(url, tmp_path):
    with pytest.raises(ConfigError) as caught:
        backfill(config(), url, str(T0), str(T0 + 60), tmp_path)
    assert caught.value.key == "--prometheus" and "pw" not in str(caught.value)


def alerts_answer(request: Received) -> Reply:
    """ALERTS: HighLatency fires for a at T0+20..T0+40 and T0+90..T0+100 (across the 1-minute
    chunks), Down for b at T0+60..T0+70; a series without a job is skipped."""
    params = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
    start, end = float(params["start"]), float(params["end"])
    spans = [({"job": "a", "alertname": "HighLatency"}, [20, 30, 40, 90, 100]),
             ({"job": "b", "alertname": "Down"}, [50, 60, 70]), ({"alertname": "NoJob"}, [0])]
    result = [{"metric": labels, "values": [[T0 + t, "1" if t != 50 else "0"] for t in at
                                            if start <= T0 + t <= end]}
              for labels, at in spans]
    return Reply(200, body=json.dumps({"status": "success",
                                       "data": {"resultType": "matrix", "result": result}}).encode())


def test_incidents_from_the_alerts_series_join_runs_across_chunks(receiver, tmp_path, capsys):
    from sentinel.cli import main
    from sentinel.training.incidents import read_incidents

    receiver.respond = alerts_answer
    cfg = tmp_path / "c.yaml"
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["input"] = {"service_label": "job"}
    raw["features"] = [{"name": "qps"}, {"name": "error_rate"}, {"name": "p99_ms"}]
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "incidents.csv"
    assert main(["backfill", "--config", str(cfg), "--prometheus", receiver.url(""), "--start",
                 str(T0), "--end", str(T0 + 120), "--chunk", "1m", "--incidents-out", str(out),
                 "--alerts-query", 'ALERTS{alertstate="firing",severity="page"}']) == 0
    assert json.loads(capsys.readouterr().out)["incidents"] == 3
    incidents = [(i.service, i.start_ts - T0, i.end_ts - T0, i.cause) for i in read_incidents(out)]
    assert incidents == [("a", 20, 50, "HighLatency"), ("b", 60, 80, "Down"),
                         ("a", 90, 110, "HighLatency")]
    queries = {parse_qs(urlsplit(r.path).query)["query"][0] for r in receiver.received}
    assert queries == {'ALERTS{alertstate="firing",severity="page"}'}
