"""`sentinel backfill`: history from Prometheus's `/api/v1/query_range`, as sample JSONL.

    >>> backfill(config, "http://prometheus:9090", "2025-11-01T00:00:00Z", "now", Path("history"))
    {"chunks": 120, "written": 120, "skipped": 0, "samples": 2073600, "out": "history"}

Every mapped metric (each feature, by its `source` or its own name, and `input.metrics`: the
failure rule's metrics must be among them) is one PromQL expression grouped by
`input.service_label`: the source's `promql`, or one derived from it (`promql_for`). The range
is cut into chunks of `chunk` on the step grid; each chunk is one JSONL file,
``backfill-<start>-<end>.jsonl``, written atomically once all its queries answered. A chunk
whose file exists is skipped, so a backfill that stopped (Ctrl-C, an outage) resumes where it
stopped when run again. Each request is retried on a transport error, 429 and 5xx with a
doubling pause; a query Prometheus rejects (4xx) stops the run naming the metric.

Prometheus evaluates each expression at every step of the grid, so a value is the one at the
step's *start*, looked back over Prometheus's lookback window: the same grid as the daemon's
buckets, whose sample at ts also covers [ts, ts + step).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from sentinel.atomic import write_atomic
from sentinel.config.readers import _url, parse_duration
from sentinel.config.schema import Config, MappedMetric, PrometheusConfig, SourceSpec
from sentinel.config.secrets import SecretSource, read_secret
from sentinel.core.samples import Sample, encode, parse_ts
from sentinel.errors import ConfigError, DataError, SentinelError, TransportError
from sentinel.sinks.transport import http_get
from sentinel.tls import client_context

log = logging.getLogger(__name__)
ATTEMPTS = 5
FIRST_PAUSE_SECONDS = 1.0
_AGGREGATION = {"sum": "sum", "max": "max", "mean": "avg"}

Get = Callable[[str, dict[str, str], float], tuple[int, dict[str, str], bytes]]


def backfill_metrics(config: Config) -> tuple[MappedMetric, ...]:
    """What backfill queries: the mapped metrics; ConfigError if a failure metric is not one."""
    metrics = tuple(MappedMetric(f.name, f.source or SourceSpec(metric=f.name)) for f in config.features)
    metrics += config.input.metrics
    names = {m.name for m in metrics}
    for i, condition in enumerate(config.failure.conditions):
        if condition.metric not in names:
            raise ConfigError(f"failure.{config.failure.mode}[{i}].metric", condition.metric,
                              "a feature or an input.metrics entry (with a source), so that "
                              "`sentinel backfill` can read it from Prometheus")
    return metrics


def promql_for(source: SourceSpec, service_label: str, rate_window_seconds: float) -> str:
    """The source's `promql`, or the expression equivalent to what `sentinel ingest` computes.

        >>> promql_for(SourceSpec(metric="http_requests_total", counter=True), "job", 60)
        'sum by (job) (rate(http_requests_total[60s]))'
    """
    if source.promql is not None:
        return source.promql
    matchers = ",".join(f'{label}=~"{_escape(rx)}"' for label, rx in source.match)
    selector = f"{{{matchers}}}" if matchers else ""
    window = f"[{int(rate_window_seconds)}s]"
    if source.histogram_quantile is not None:
        expr = (f"histogram_quantile({source.histogram_quantile!r}, sum by (le, {service_label}) "
                f"(rate({source.metric}_bucket{selector}{window})))")
    elif source.counter:
        how = _AGGREGATION[source.aggregate]
        expr = f"{how} by ({service_label}) (rate({source.metric}{selector}{window}))"
    else:
        how = _AGGREGATION[source.aggregate]
        expr = f"{how} by ({service_label}) ({source.metric}{selector})"
    return expr if source.scale == 1 else f"({expr}) * {source.scale!r}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def parse_time(value: str, flag: str, now: float) -> float:
    if value == "now":
        return now
    ts = parse_ts(value)
    if ts is None:
        try:
            ts = float(value)
        except ValueError:
            ts = None
    if ts is None or not math.isfinite(ts):
        raise SentinelError(f"{flag} {value!r}: expected RFC 3339 (2025-11-01T00:00:00Z), "
                            "Unix seconds or 'now'")
    return ts


class PrometheusClient:
    """`query_range` with retries; auth and TLS from `input.prometheus`."""

    def __init__(self, url: str, config: PrometheusConfig, get: Get | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/")
        self.config = config
        self._sleep = sleep
        self._headers = {"Accept": "application/json"}
        key = "input.prometheus"
        if config.basic_auth is not None:
            password = read_secret(config.basic_auth.password, f"{key}.basic_auth").reveal()
            token = base64.b64encode(f"{config.basic_auth.username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        elif config.bearer_token_file or config.bearer_token_env:
            secret = read_secret(SecretSource(config.bearer_token_file, config.bearer_token_env), key,
                                 "bearer_token")
            self._headers["Authorization"] = f"Bearer {secret.reveal()}"
        context = client_context(key, config.ca_file) if self.url.startswith("https://") else None
        self._get = get or (lambda u, h, t: http_get(u, h, t, context))

    def query_range(self, query: str, start: float, end: float, step_seconds: int, what: str) -> list[dict]:
        """The matrix of `query` over [start, end] (inclusive) at `step_seconds`."""
        params = urlencode({"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                            "step": f"{step_seconds}s"})
        url = f"{self.url}/api/v1/query_range?{params}"
        pause = FIRST_PAUSE_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            problem = None
            try:
                status, _, body = self._get(url, self._headers, self.config.timeout_seconds)
            except TransportError as exc:
                status, body, problem = 0, b"", str(exc)
            if status == 200:
                return _matrix(body, what, query)
            if 400 <= status < 500 and status != 429:
                raise DataError(f"Prometheus rejected the query of {what} ({status}): "
                                f"{_error(body)}; query: {query}")
            problem = problem or f"HTTP {status}: {_error(body)}"
            if attempt < ATTEMPTS:
                log.warning("query_range for %s failed (%s); retry %d of %d in %.0fs", what, problem,
                            attempt, ATTEMPTS - 1, pause)
                self._sleep(pause)
                pause *= 2
        raise DataError(f"query_range for {what} failed {ATTEMPTS} times, last: {problem}; run "
                        "the same backfill again to resume from the chunks already written")


def _error(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", body[:200]))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


def _matrix(body: bytes, what: str, query: str) -> list[dict]:
    try:
        doc = json.loads(body)
        data = doc["data"]
        if doc.get("status") != "success" or data["resultType"] != "matrix":
            raise ValueError(f"status {doc.get('status')!r}, resultType {data.get('resultType')!r}")
        return list(data["result"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"query_range for {what} answered no matrix ({exc}); query: {query}") from exc


def backfill(config: Config, url: str, start: str, end: str, out: Path, chunk: str = "6h",
             get: Get | None = None, sleep: Callable[[float], None] = time.sleep,
             now: Callable[[], float] = time.time) -> dict[str, object]:
    """Write the chunks of [start, end) that are not written yet; a JSON-able summary."""
    url = _url(url, "--prometheus")  # http(s) with a host, no credentials in it
    metrics = backfill_metrics(config)
    step = config.step_seconds
    chunk_seconds, first, last = _span(step, start, end, chunk, now)
    rate_window = config.input.prometheus.rate_window_seconds or max(4 * step, 60)
    queries = [(m.name, promql_for(m.source, config.input.service_label, rate_window)) for m in metrics]
    client = PrometheusClient(url, config.input.prometheus, get, sleep)
    out.mkdir(parents=True, exist_ok=True)
    bounds = list(range(first, last, chunk_seconds))
    summary = {"chunks": len(bounds), "written": 0, "skipped": 0, "samples": 0, "out": str(out)}
    for n, a in enumerate(bounds, 1):
        b = min(a + chunk_seconds, last)
        path = out / f"backfill-{a}-{b}.jsonl"
        if path.exists():
            summary["skipped"] += 1
            log.info("backfill chunk %d/%d %s: written before, skipped", n, len(bounds), path.name)
            continue
        rows: dict[tuple[int, str], dict[str, float]] = {}
        for name, query in queries:
            for series in client.query_range(query, a, b - step, step, name):
                service = series.get("metric", {}).get(config.input.service_label)
                if not service:
                    continue
                for ts, text in series.get("values", []):
                    value = float(text)
                    if math.isfinite(value):
                        rows.setdefault((int(float(ts)), service), {})[name] = value
        lines = [encode(Sample(service, float(ts), values)) for (ts, service), values in sorted(rows.items())]
        write_atomic(path, "".join(f"{line}\n" for line in lines).encode())
        summary["written"] += 1
        summary["samples"] += len(lines)
        log.info("backfill chunk %d/%d %s: %d samples", n, len(bounds), path.name, len(lines))
    return summary


ALERTS_QUERY = 'ALERTS{alertstate="firing"}'


def backfill_incidents(config: Config, url: str, start: str, end: str, out: Path,
                       query: str = ALERTS_QUERY, chunk: str = "1d", get: Get | None = None,
                       sleep: Callable[[float], None] = time.sleep,
                       now: Callable[[], float] = time.time) -> dict[str, object]:
    """An incident history (CSV: service, start, end, cause) from Prometheus's `ALERTS` series:
    each run of steps where an alert of a service fires is one incident, its `alertname` the
    cause. The service is the `input.service_label` label of the series (series without it are
    skipped). `query` narrows it, e.g. ``ALERTS{alertstate="firing", severity="page"}``;
    it is queried in chunks of `chunk` on the config's step grid, and runs that cross a chunk
    boundary are joined. Written atomically once every chunk answered."""
    from sentinel.core.incidents import Incident

    url = _url(url, "--prometheus")
    step = config.step_seconds
    chunk_seconds, first, last = _span(step, start, end, chunk, now)
    client = PrometheusClient(url, config.input.prometheus, get, sleep)
    firing: dict[tuple[str, str], set[int]] = {}
    for a in range(first, last, chunk_seconds):
        b = min(a + chunk_seconds, last)
        for series in client.query_range(query, a, b - step, step, "ALERTS"):
            labels = series.get("metric", {})
            service = labels.get(config.input.service_label)
            if not service:
                continue
            steps = firing.setdefault((service, labels.get("alertname", "")), set())
            for ts, text in series.get("values", []):
                if math.isfinite(float(text)) and float(text) > 0:
                    steps.add(int(float(ts)) // step * step)
    incidents = []
    for (service, cause), steps in sorted(firing.items()):
        runs: list[list[int]] = []
        for ts in sorted(steps):
            if runs and ts - runs[-1][1] <= step:
                runs[-1][1] = ts
            else:
                runs.append([ts, ts])
        incidents += [Incident(service, float(a), float(b + step), cause) for a, b in runs]
    incidents.sort(key=lambda i: (i.start_ts, i.service))
    rows = ["service,start,end,cause\n"] + [
        f"{_csv(i.service)},{i.start_ts:.0f},{i.end_ts:.0f},{_csv(i.cause)}\n" for i in incidents]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, "".join(rows).encode())
    log.info("%d incidents from %s written to %s", len(incidents), query, out)
    return {"incidents": len(incidents), "services": len({i.service for i in incidents}),
            "query": query, "out": str(out)}


def _csv(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _span(step: int, start: str, end: str, chunk: str, now: Callable[[], float]
          ) -> tuple[int, int, int]:
    """--start/--end/--chunk on the step grid: (chunk seconds, first step, last step)."""
    chunk_seconds = max(step, int(parse_duration(chunk, "--chunk")) // step * step)
    first = math.ceil(parse_time(start, "--start", now()) / step) * step
    last = math.floor(parse_time(end, "--end", now()) / step) * step
    if last <= first:
        raise SentinelError(f"--end must be at least one step ({step}s) after --start")
    return chunk_seconds, first, last
