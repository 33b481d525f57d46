"""The config's vocabulary: frozen, typed dataclasses, one per YAML section.

Parsed from YAML by `sentinel.config.load`; imported by every layer, including the pure
core, so this module imports nothing from Sentinel but the secret-source value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from sentinel.config.secrets import SecretSource

Op = Literal[">", ">=", "<", "<=", "==", "!="]
Transform = Literal["auto", "none", "log1p", "log"]
Center = Literal["none", "window"]
RetrainMetric = Literal["pr_auc", "early_recall"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
InputFormat = Literal["sentinel", "prometheus-kafka-adapter", "telegraf-json", "otlp-json", "otlp-proto"]
Aggregation = Literal["sum", "max", "mean"]
TimestampUnits = Literal["1s", "1ms", "1us", "1ns"]
Labels = Literal["rule", "incidents", "both"]


@dataclass(frozen=True)
class SourceSpec:
    """Where a metric comes from in a foreign format (sentinel.ingest), or in Prometheus.

    The series named `metric` whose labels fully match every `match` regex (Prometheus ``=~``
    semantics; a missing label is ""), one value per series per step, combined across series
    by `aggregate`. `counter`: a cumulative counter, turned into a per-second rate (resets
    handled); `histogram_quantile`: that quantile of the step's observations, from the
    ``<metric>_bucket`` series and their ``le`` label. `scale` multiplies the result
    (seconds -> ms: 1000). `promql` is what `sentinel backfill` queries instead.
    """

    metric: str | None = None
    match: tuple[tuple[str, str], ...] = ()
    aggregate: Aggregation = "sum"
    counter: bool = False
    histogram_quantile: float | None = None
    scale: float = 1.0
    promql: str | None = None


@dataclass(frozen=True)
class FeatureSpec:
    """One model input, in model input order.

    `transform` is applied first: ``auto`` (the default) decides from the training data,
    giving a signed log scale to a heavy-tailed feature (traffic spanning 10 to 100,000 qps,
    a latency that explodes) and leaving a bounded one linear; ``log1p`` and ``log`` =
    log(x + 1e-4) force a log scale, ``none`` forbids it. Then `center: window` subtracts
    the window's own mean of the transformed value. The model also sees each feature's
    deviation from its window's median, so a 300-qps and a 20,000-qps service look alike;
    last comes the robust standardisation fitted on training data.
    """

    name: str
    transform: Transform = "auto"
    center: Center = "none"
    source: SourceSpec | None = None  # foreign formats and backfill only (input.format)


@dataclass(frozen=True)
class Condition:
    metric: str
    op: Op
    value: float


@dataclass(frozen=True)
class FailureRule:
    mode: Literal["any", "all"]
    conditions: tuple[Condition, ...]
    for_seconds: float


@dataclass(frozen=True)
class BasicAuthConfig:
    """HTTP basic auth; the password comes from a file or an environment variable."""

    username: str
    password_file: str | None = None
    password_env: str | None = None

    @property
    def password(self) -> SecretSource:
        return SecretSource(self.password_file, self.password_env)


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    timeout_seconds: float = 5.0
    secret_file: str | None = None
    secret_env: str | None = None
    basic_auth: BasicAuthConfig | None = None
    ca_file: str | None = None  # PEM CA bundle that verifies an https:// receiver (default: system CAs)


@dataclass(frozen=True)
class DeliveryConfig:
    """Retries and the on-disk outbox of alert deliveries (see sentinel.sinks)."""

    initial_backoff_seconds: float = 1.0  # the first retry waits a random time up to this ...
    max_backoff_seconds: float = 60.0  # ... a bound that doubles per failed attempt up to this
    # An alert still undelivered this long after it was queued is dropped ("expired"): by then
    # it is stale news. Wall-clock age, so it counts across restarts.
    max_age_seconds: float = 3600.0
    max_pending: int = 10000  # queued deliveries; on overflow the oldest one is dropped


@dataclass(frozen=True)
class AlertmanagerConfig:
    url: str  # base URL; alerts are POSTed to <url>/api/v2/alerts
    # Firing alerts are re-sent this often with endsAt = now + 4 x this: Alertmanager resolves
    # an alert on its own once a dead Sentinel stops re-sending it.
    resend_interval_seconds: float = 60.0
    timeout_seconds: float = 5.0
    watchdog: bool = True  # keep a SentinelWatchdog alert firing: a dead man's switch
    basic_auth: BasicAuthConfig | None = None
    ca_file: str | None = None


RESOLVE_RATIO = 0.6


@dataclass(frozen=True)
class AlertingConfig:
    # fire when risk >= threshold ...; None ("auto") takes the operating threshold the model
    # chose on its validation split (see `resolved`)
    threshold: float | None = None
    for_steps: int | None = None  # ... for this many consecutive scored steps (None: 30 s worth)
    resolve_threshold: float | None = None  # resolve below this ...; None: 0.6 x threshold
    resolve_steps: int | None = None  # ... for this many consecutive scored steps (None: 60 s worth)
    cooldown_seconds: float = 300.0  # no new firing this long after a resolve
    severity: str = "critical"
    webhooks: tuple[WebhookConfig, ...] = ()
    external_url: str = ""  # externalURL and generatorURL of notifications, e.g. a dashboard
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    alertmanager: AlertmanagerConfig | None = None
    # per firing, this many metrics behind the risk (sentinel.core.attribution); 0: none
    drivers: int = 3
    drivers_refresh_seconds: float = 60.0  # while firing, drivers are recomputed this often

    def resolved(self, operating_threshold: float | None) -> AlertingConfig:
        """Concrete thresholds: "auto" takes the model's operating threshold (0.5 without one)."""
        threshold = self.threshold
        if threshold is None:
            threshold = 0.5 if operating_threshold is None else operating_threshold
        resolve = self.resolve_threshold
        if resolve is None or resolve > threshold:
            resolve = RESOLVE_RATIO * threshold
        return replace(self, threshold=threshold, resolve_threshold=resolve)


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 0.002
    lstm_units: tuple[int, int] = (48, 24)
    dropout: float = 0.2  # on the LSTMs' inputs while training: few failures, easy to overfit
    validation_fraction: float = 0.2  # the last fraction of time is the validation split
    patience: int = 6  # early stopping on validation loss
    seed: int = 7
    negative_stride: int = 5  # keep every Nth negative window (positives all kept)
    max_windows: int = 100_000  # at most this many training windows (negatives thinned further)
    # the "auto" alert threshold is the lowest whose false alerts on the validation split
    # stay within this many per service-day
    false_alerts_per_day: float = 0.5
    # where training's failure events come from: the `failure` rule, an incident history
    # (`incidents`: CSV or JSONL of service, start, end[, cause]; see sentinel.training.incidents),
    # or both. The retrainer reads the same file on every run.
    labels: Labels = "rule"
    incidents: str | None = None
    # the incident history is complete from this time on (Unix seconds); with labels
    # "incidents" the history before it is unlabelled. None: complete for all the history
    incidents_from: float | None = None


@dataclass(frozen=True)
class KafkaSslConfig:
    """TLS to the brokers; the server certificate and host name are always verified."""

    ca_file: str | None = None  # PEM CA bundle (default: the system CAs)
    cert_file: str | None = None  # client certificate (mutual TLS), with key_file
    key_file: str | None = None  # its unencrypted private key: keep it mode 0600
    check_hostname: bool = True


@dataclass(frozen=True)
class KafkaSaslConfig:
    mechanism: SaslMechanism
    username: str
    password_file: str | None = None
    password_env: str | None = None

    @property
    def password(self) -> SecretSource:
        return SecretSource(self.password_file, self.password_env)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    topic: str = "sentinel.metrics"
    group_id: str = "sentinel"
    dead_letter_topic: str | None = None  # rejected messages go here, with reason and origin
    # topology with several replicas: each publishes its dependencies' closed steps to this
    # compacted topic (keyed by service) and reads the others' (docs/topology.md); off if unset
    steps_topic: str | None = None
    # After a partition is assigned, this many messages before its committed offset are
    # re-read (scored silently) to refill the windows and alert state of its services.
    rebuild_messages: int = 2000
    max_poll_records: int = 2000
    poll_timeout_seconds: float = 1.0
    session_timeout_seconds: float = 30.0
    max_poll_interval_seconds: float = 300.0
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl: KafkaSslConfig | None = None  # used with SSL and SASL_SSL
    sasl: KafkaSaslConfig | None = None  # required with SASL_PLAINTEXT and SASL_SSL


@dataclass(frozen=True)
class StreamConfig:
    allowed_lateness_seconds: float = 30.0
    max_missing_fraction: float = 0.2  # a window with more missing steps is not scored
    max_future_seconds: float = 300.0  # samples further ahead of the wall clock are rejected
    silence_seconds: float = 60.0  # no sample for this long (wall clock): the service is "no data"
    max_services: int = 10000  # tracked services; beyond it newcomers, then the longest idle, go
    # a caller's step waits at most this long (event time, on the caller's own steps) for its
    # dependencies to close the same step; then it is scored with the late ones neutral
    dependency_wait_seconds: float = 20.0


@dataclass(frozen=True)
class StateConfig:
    dir: str = "var"  # the outbox of pending alert deliveries (and the history store) live here


@dataclass(frozen=True)
class ModelConfig:
    # a model directory written by `sentinel train`, or a registry (see sentinel.retrain.registry)
    path: str = "model"
    keep_versions: int = 5  # registry: versions kept besides the current one and its rollback
    check_interval_seconds: float = 5.0  # how often the daemon looks for a newly promoted model


@dataclass(frozen=True)
class HistoryConfig:
    """The history store: every closed bucket, as sample JSONL under <state.dir>/history/."""

    enabled: bool = True
    retention_seconds: float = 7 * 86400.0  # event time: older segments are deleted
    max_bytes: int = 1 << 30  # beyond this total, the oldest segments are deleted
    replica: str | None = None  # segment file suffix; None: the host name


@dataclass(frozen=True)
class RetrainConfig:
    """Scheduled retraining: train on history, validate on a holdout, promote (sentinel.retrain.scheduler)."""

    enabled: bool = False
    schedule: str = "interval 6h"  # "interval <duration>" or a 5-field cron string (UTC)
    min_history_seconds: float = 86400.0  # event time the history must span before a run trains
    holdout_seconds: float = 6 * 3600.0  # the newest history: never trained on, graded on
    margin: float = 0.02  # promote when candidate score >= current score - margin
    metric: RetrainMetric = "pr_auc"
    timeout_seconds: float = 1200.0  # the training child is killed after this long
    threads: int = 1  # TensorFlow/OpenMP threads of the training child


@dataclass(frozen=True)
class ServerTlsConfig:
    cert_file: str  # PEM certificate (chain) the listener presents
    key_file: str  # its unencrypted private key


@dataclass(frozen=True)
class MetricsAuthConfig(BasicAuthConfig):
    # /healthz and /readyz stay open by default: kubelet probes cannot read a Secret for a
    # header, and the probes reveal no metric values
    open_probes: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9108"  # loopback unless told otherwise
    tls: ServerTlsConfig | None = None
    basic_auth: MetricsAuthConfig | None = None

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class MappedMetric:
    """A metric that is not a feature (e.g. one the failure rule reads), with its source."""

    name: str
    source: SourceSpec


@dataclass(frozen=True)
class PrometheusConfig:
    """How `sentinel backfill` talks to Prometheus (the URL is its --prometheus argument)."""

    basic_auth: BasicAuthConfig | None = None
    bearer_token_file: str | None = None  # Authorization: Bearer <the file's content>
    bearer_token_env: str | None = None
    ca_file: str | None = None  # PEM CA bundle that verifies an https:// Prometheus
    timeout_seconds: float = 60.0  # per query_range request
    # the rate window of counters (and histogram buckets) in the queries backfill derives from
    # a source; None: max(4 x step, 1m), enough for two scrapes at the usual intervals
    rate_window_seconds: float | None = None


@dataclass(frozen=True)
class InputConfig:
    """The message format on Kafka (DESIGN: `input.format`) and how foreign points map to samples.

    `sentinel ingest` reads `topic` in group `group_id` and produces Sentinel samples to
    `kafka.topic`; `service_label` names the label / tag / resource attribute that holds the
    service. A step of a service is emitted once a point `allowed_lateness` past its end
    arrives for that service (or the input is idle that long).
    """

    format: InputFormat = "sentinel"
    topic: str | None = None
    group_id: str = "sentinel-ingest"
    service_label: str = "job"
    timestamp_units: TimestampUnits = "1s"  # telegraf-json: Telegraf's json_timestamp_units
    allowed_lateness_seconds: float = 0.0
    metrics: tuple[MappedMetric, ...] = ()  # sources of metrics besides the features
    # `sentinel ingest` serves /metrics, /healthz, /readyz here (TLS and auth as metrics.*);
    # None: not served
    metrics_listen: str | None = None
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)

    def sources(self, features: tuple[FeatureSpec, ...]) -> tuple[MappedMetric, ...]:
        """Every mapped metric: the features that name a source, then `metrics`."""
        mapped = tuple(MappedMetric(f.name, f.source) for f in features if f.source is not None)
        return mapped + self.metrics


@dataclass(frozen=True)
class SaleEvent:
    """A planned event (a sale, a campaign): traffic to `services` (None: every service) is
    expected to be about `multiplier` times the usual over [start_ts, end_ts)."""

    name: str
    start_ts: float
    end_ts: float
    services: tuple[str, ...] | None = None
    multiplier: float = 1.0

    def applies_to(self, service: str) -> bool:
        return self.services is None or service in self.services


@dataclass(frozen=True)
class CalendarConfig:
    """Planned events as model inputs (sentinel.core.calendar): from a YAML/JSON file
    (sentinel.config.calendar_file), re-read when it changes, and optionally a compacted
    Kafka topic keyed by event name (sentinel.daemon.calendar_source)."""

    file: str | None = None
    topic: str | None = None
    reload_interval_seconds: float = 10.0  # how often the daemon checks the file for changes


@dataclass(frozen=True)
class Config:
    step_seconds: int
    window_seconds: int
    horizon_seconds: int
    features: tuple[FeatureSpec, ...]
    failure: FailureRule
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    input: InputConfig = field(default_factory=InputConfig)
    # caller -> its dependencies (`topology:`), self-dependencies dropped; `topology_file`
    # adds the map in that file (read at start-up, reloaded by the daemon when it changes)
    topology: tuple[tuple[str, tuple[str, ...]], ...] = ()
    topology_file: str | None = None
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    source: str = "<memory>"

    @property
    def window_steps(self) -> int:
        return self.window_seconds // self.step_seconds

    @property
    def horizon_steps(self) -> int:
        return self.horizon_seconds // self.step_seconds

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def failure_for_steps(self) -> int:
        """Consecutive steps the failure condition must hold (at least one)."""
        return max(1, -(-int(self.failure.for_seconds) // self.step_seconds))
