"""Every Prometheus metric of `sentinel run`, registered on an injected registry.

    >>> registry = CollectorRegistry()
    >>> telemetry = Telemetry(registry)
    >>> telemetry.samples.inc()
    >>> registry.get_sample_value("sentinel_samples_total")
    1.0

The alert-delivery metrics (`sentinel_webhook_deliveries_total{sink,outcome}`,
`sentinel_outbox_pending`, ...) are the Notifier's, on the same registry. Label values are
bounded: `reason` is one of samples.REASONS, `outcome` and `state` are fixed sets,
`partition` is an assigned partition, and `service` is capped by `stream.max_services`
(series of evicted or revoked services are removed). docs/daemon.md explains each metric.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.utils import floatToGoString

from sentinel.core.attribution import Driver
from sentinel.core.samples import REASONS

OUTCOMES = ("accepted", "late", "rejected")
ALERT_STATES = ("firing", "resolved")
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    """The daemon's metrics; one instance per registry (names may be registered once)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.up = Gauge("sentinel_up", "1 while the daemon's main loop runs", registry=r)
        self.risk = RiskSeries(r)
        self.samples = Counter("sentinel_samples_total",
                               "Samples decoded from live records (warm-up re-reads excluded)",
                               registry=r)
        self.rejected = Counter("sentinel_samples_rejected_total",
                                "Live records that are not valid samples, by reason",
                                ["reason"], registry=r)
        self.outcomes = Counter("sentinel_samples_outcome_total",
                                "Live records by fate: accepted + late + rejected = records read",
                                ["outcome"], registry=r)
        self.late = Counter("sentinel_samples_late_total",
                            "Samples behind the watermark beyond stream.allowed_lateness: not scored",
                            registry=r)
        self.warmup = Counter("sentinel_warmup_records_total",
                              "Records re-read after a partition assignment to rebuild windows",
                              registry=r)
        self.dead_letters = Counter("sentinel_dead_letters_total",
                                    "Rejected records written to kafka.dead_letter_topic",
                                    registry=r)
        self.dead_letters_failed = Counter(
            "sentinel_dead_letters_failed_total",
            "Rejected records whose dead letter the broker or client refused (dropped, logged; "
            "offsets move on), by rejection reason", ["reason"], registry=r)
        self.lag = Gauge("sentinel_consumer_lag",
                         "Records between the consumer's position and the end of the partition",
                         ["partition"], registry=r)
        self.tracked = Gauge("sentinel_services_tracked",
                             "Services with windows in memory (at most stream.max_services)",
                             registry=r)
        self.evicted = Counter("sentinel_services_evicted_total",
                               "Services dropped to stay under max_services (newcomers first, then the "
                               "longest idle)",
                               registry=r)
        self.no_data = Gauge("sentinel_service_no_data",
                             "1 while the service sent no sample for stream.silence (wall clock)",
                             ["service"], registry=r)
        self.batch_size = Histogram("sentinel_scoring_batch_size",
                                    "Windows scored in one batched model call",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.scoring_latency = Histogram("sentinel_scoring_latency_seconds",
                                         "Time to bucket, window and score one poll's samples",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.unscorable = Counter("sentinel_windows_unscorable_total",
                                  "Full windows not scored: more missing steps than allowed",
                                  registry=r)
        self.steps_behind = Gauge(
            "sentinel_dependency_steps_behind_seconds",
            "Several replicas (kafka.steps_topic): event time between the newest step closed "
            "here and the newest dependency step received from another replica",
            registry=r)
        self.dependency_late = Counter(
            "sentinel_dependency_late_total",
            "Windows scored without a dependency's step (it was later than "
            "stream.dependency_wait, or silent): counted once per window and dependency",
            registry=r)
        self.edge_risk = Gauge(
            "sentinel_dependency_edge_risk",
            f"The {EDGE_LIMIT} caller -> dependency edges with the highest caller risk x "
            "dependency failure pressure at the caller's latest scored step (bounded: at "
            f"most {EDGE_LIMIT} series)", ["caller", "dependency"], registry=r)
        self.alerts = Counter("sentinel_alerts_total", "Alert transitions queued for delivery",
                              ["state"], registry=r)
        self.firing = Gauge("sentinel_alerts_firing", "Services whose failure-risk alert fires",
                            registry=r)
        self.drivers = Gauge(
            "sentinel_alert_driver",
            "While a service's alert fires: the risk each of its top drivers carries (the risk "
            "drop when the metric is replaced by its normal value); rank 1 is the largest. "
            "Removed when the alert resolves", ["service", "rank", "metric"], registry=r)
        self._driver_labels: dict[str, list[tuple[str, str, str]]] = {}
        self.model_info = Gauge("sentinel_model_info", "The loaded model (value 1)", ["version"],
                                registry=r)
        self.threshold = Gauge("sentinel_alert_threshold",
                               "Risk at or above which the failure-risk alert fires (the "
                               "configured or the model's threshold; 0 without a model)",
                               registry=r)
        self.model_age = Gauge("sentinel_model_age_seconds",
                               "Seconds since the loaded model was trained (written)", registry=r)
        self.progress = Gauge("sentinel_last_progress_timestamp_seconds",
                              "Unix time of the main loop's last completed poll (dead-man's switch)",
                              registry=r)
        self.commit_failures = Counter("sentinel_commit_failures_total",
                                       "Offset commits that failed (retried with the next batch)",
                                       registry=r)
        self.broker_errors = Counter("sentinel_kafka_errors_total",
                                     "Kafka requests that failed (broker unreachable or refusing)",
                                     registry=r)
        for reason in REASONS:  # present from the start, so rate() and alerts see zeros
            self.rejected.labels(reason)
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)
        for state in ALERT_STATES:
            self.alerts.labels(state)

    def set_model(self, version: str, written_ts: float, wall_clock: Callable[[], float],
                  threshold: float | None = None) -> None:
        self.model_info.clear()  # a swapped-in model replaces the series of the one before
        self.model_info.labels(version).set(1)
        if threshold is not None:
            self.threshold.set(threshold)
        self.model_age.set_function(lambda: max(0.0, wall_clock() - written_ts))

    def set_lag(self, lag: dict[int, int]) -> None:
        """Replace the per-partition lag; partitions no longer assigned lose their series."""
        for labels in _label_values(self.lag):
            if int(labels[0]) not in lag:
                self.lag.remove(*labels)
        for partition, records in lag.items():
            self.lag.labels(str(partition)).set(records)

    def set_risk(self, service: str, risk: float) -> None:
        self.risk.set(service, risk)

    def set_edges(self, edges: dict[tuple[str, str], float]) -> None:
        """Replace `sentinel_dependency_edge_risk` with these (caller, dependency) edges."""
        for labels in _label_values(self.edge_risk):
            if (labels[0], labels[1]) not in edges:
                self.edge_risk.remove(*labels)
        for (caller, dependency), value in edges.items():
            self.edge_risk.labels(caller, dependency).set(value)

    def set_drivers(self, service: str, drivers: Sequence[Driver]) -> None:
        """The drivers of a firing service replace its previous ones (none: no series)."""
        self.clear_drivers(service)
        labels = [(service, str(rank), d.metric if d.service is None else f"dependency:{d.service}")
                  for rank, d in enumerate(drivers, 1)]
        for label, driver in zip(labels, drivers, strict=True):
            self.drivers.labels(*label).set(driver.contribution)
        if labels:
            self._driver_labels[service] = labels

    def clear_drivers(self, service: str) -> None:
        for label in self._driver_labels.pop(service, ()):
            with contextlib.suppress(KeyError):
                self.drivers.remove(*label)

    def forget_services(self, services: Iterable[str]) -> None:
        """Remove the per-service series of services no longer tracked here."""
        for service in services:
            self.risk.remove(service)
            self.clear_drivers(service)
            with contextlib.suppress(KeyError):  # never had the series
                self.no_data.remove(service)


EDGE_LIMIT = 20  # sentinel_dependency_edge_risk series at most
# labelled series that exist only when a topology is configured (none without one)
TOPOLOGY_ONLY_METRICS = ("sentinel_dependency_edge_risk",)


def top_edges(risks: dict[str, tuple[int, float]], dependencies: Callable[[str], tuple[str, ...]],
              pressure: Callable[[str, int], float | None], limit: int = EDGE_LIMIT
              ) -> dict[tuple[str, str], float]:
    """The `limit` (caller, dependency) edges with the highest caller risk x the dependency's
    failure pressure at the caller's step; `risks`: caller -> (ts, risk) of its latest score.
    Only the `4 x limit` riskiest callers are looked at, so a poll of 100,000 scores costs a
    partial sort, not a million lookups."""
    callers = heapq.nlargest(4 * limit, (c for c in risks if dependencies(c)),
                             key=lambda c: risks[c][1])
    edges: dict[tuple[str, str], float] = {}
    for caller in callers:
        ts, risk = risks[caller]
        for dep in dependencies(caller):
            value = pressure(dep, ts)
            if value is not None and risk * value > 0:
                edges[caller, dep] = risk * value
    return dict(sorted(edges.items(), key=lambda item: -item[1])[:limit])


class RiskSeries:
    """`sentinel_failure_risk{service}`: one float per service in a dict, exported at scrape time.

    A labelled prometheus_client Gauge keeps an object, a lock and a label tuple per service
    (~550 bytes; 55 MB at 100,000 services) and costs a lookup per set; this keeps 100 bytes.
    `exposition` writes its lines directly: prometheus_client builds a Sample per series and
    formats it, about 1 s of the GIL per scrape at 100,000 services."""

    NAME = "sentinel_failure_risk"
    HELP = "Latest predicted risk (0..1) that the service fails within the horizon"

    def __init__(self, registry: CollectorRegistry) -> None:
        self._risk: dict[str, float] = {}
        self._writing = threading.local()  # set while `exposition` runs on this thread
        registry.register(self)
        _RISK_SERIES[registry] = self

    def set(self, service: str, risk: float) -> None:
        self._risk[service] = risk

    def remove(self, service: str) -> None:
        self._risk.pop(service, None)

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["service"])]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if getattr(self._writing, "active", False):
            return  # `exposition` writes this family itself
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["service"])
        for service, risk in dict(self._risk).items():  # a copy: the main loop keeps setting
            family.add_metric([service], risk)
        yield family

    def text(self) -> bytes:
        """This family in the text format, as `generate_latest` writes it."""
        lines = [f"# HELP {self.NAME} {self.HELP}\n# TYPE {self.NAME} gauge\n"]
        prefix = self.NAME + '{service="'
        lines += [f'{prefix}{_escape(service)}"}} {_value(risk)}\n'
                  for service, risk in dict(self._risk).items()]
        # decode() admits only valid UTF-8 names; should one slip through anyway, it is
        # written escaped rather than failing every scrape of every service
        return "".join(lines).encode("utf-8", errors="backslashreplace")


_RISK_SERIES: weakref.WeakKeyDictionary[CollectorRegistry, RiskSeries] = (
    weakref.WeakKeyDictionary())  # for `exposition`


def exposition(registry: CollectorRegistry) -> bytes:
    """`generate_latest(registry)`, with the risk series (if any) written by RiskSeries.text."""
    risk = _RISK_SERIES.get(registry)
    if risk is None:
        return generate_latest(registry)
    risk._writing.active = True
    try:
        head = generate_latest(registry)
    finally:
        risk._writing.active = False
    return head + risk.text()


def _value(risk: float) -> str:
    """floatToGoString's answer; for a risk in [0, 1] that is repr (a float's, not numpy's)."""
    risk = float(risk)
    return repr(risk) if 0.0 <= risk <= 1.0 else floatToGoString(risk)


def _escape(label_value: str) -> str:
    if "\\" in label_value or "\n" in label_value or '"' in label_value:
        return label_value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return label_value


def _label_values(metric: Gauge) -> list[tuple[str, ...]]:
    return [tuple(sample.labels.values()) for family in metric.collect()
            for sample in family.samples]
