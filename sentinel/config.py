"""Sentinel's configuration: YAML parsed once into frozen, typed objects.

    >>> cfg = load_config("config/sentinel.yaml")
    >>> cfg.window_steps
    30

Every error is a :class:`ConfigError` naming the key, the bad value and what is expected.
Secrets are never config values: a config names the file or environment variable that holds
one (`*_file` / `*_env`, read at start-up by sentinel.secrets), so a config can be printed
(`sentinel check-config --dump`) and logged as it is.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

import yaml

from sentinel.errors import ConfigError
from sentinel.secrets import SecretSource, env_name, mask_url

Op = Literal[">", ">=", "<", "<=", "==", "!="]
Transform = Literal["auto", "none", "log1p", "log"]
Center = Literal["none", "window"]
RetrainMetric = Literal["pr_auc", "early_recall"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


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


@dataclass(frozen=True)
class StateConfig:
    dir: str = "var"  # the outbox of pending alert deliveries (and the history store) live here


@dataclass(frozen=True)
class ModelConfig:
    # a model directory written by `sentinel train`, or a registry (see sentinel.registry)
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
    """Scheduled retraining: train on history, validate on a holdout, promote (sentinel.retrain)."""

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


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; every problem is a :class:`ConfigError`."""
    try:
        with open(path, encoding="utf-8") as stream:
            raw = yaml.safe_load(stream)  # a named stream puts the file name in YAML's messages
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("<file>", str(path), f"a readable UTF-8 file ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", str(path), f"valid YAML: {exc}") from exc
    if raw is None:
        raise ConfigError("<file>", str(path), "a mapping of config keys, not an empty file")
    return parse_config(raw, str(path))


def parse_config(raw: object, source: str = "<memory>") -> Config:
    """Validate an already-loaded YAML document (e.g. the result of ``yaml.safe_load``)."""
    cfg = _build(Config, raw, "", _TOP, _REQUIRED, source=source)
    assert isinstance(raw, dict)  # checked by _build
    step = cfg.step_seconds
    grid = (("window", cfg.window_seconds, 2), ("horizon", cfg.horizon_seconds, 1))
    for name, seconds, min_steps in grid:  # the model sees whole steps only
        if seconds % step or seconds < min_steps * step:
            expected = f"a multiple of step ({step}s) and at least {min_steps * step}s"
            raise ConfigError(name, raw[name], expected)
    if cfg.retrain.enabled and not cfg.history.enabled:
        raise ConfigError("retrain.enabled", True, "false while history.enabled is false: "
                          "retraining learns from the history store")
    return cfg


def parse_duration(value: object, key: str = "duration", *, allow_zero: bool = False) -> float:
    """Seconds in a duration: a number of seconds, or a string with a unit s, m, h or d.

    >>> parse_duration("1.5h")
    5400.0
    """
    match = _DURATION_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match:
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        sign = "non-negative" if allow_zero else "positive"
        raise ConfigError(key, value, f"a {sign} duration such as 30, '10s', '5m', '1.5h', '1d'")
    return seconds


# Readers turn (YAML value, dotted key) into a typed value or raise ConfigError. A spec maps
# the YAML keys of one mapping to readers; a duration key `x` fills the field `x_seconds`.
T = TypeVar("T")
Reader = Callable[[object, str], Any]
Spec = dict[str, Reader]

_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HOST_PORT_RE = re.compile(r"([^\s:\[\]]+|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})")


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


def _mapping(raw: object, path: str, known: Collection[str], required: Collection[str]) -> dict:
    """The mapping itself, once every key is known and every required key is present."""
    if not isinstance(raw, dict):
        raise ConfigError(path or "<document>", raw, "a mapping of keys to values")
    for name in raw:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(_join(path, name), name, f"one of {', '.join(known)}{hint}")
    for name in required:
        if name not in raw:
            raise ConfigError(_join(path, name), None, "a value: this key is required")
    return raw


def _build(
    cls: type[T],
    raw: object,
    path: str,
    spec: Spec,
    required: Collection[str] = (),
    **extra: object,
) -> T:
    """One dataclass from one YAML mapping; keys left out keep the dataclass's defaults."""
    mapping = _mapping(raw, path, spec, required)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {
        (name if name in names else f"{name}_seconds"): read(mapping[name], _join(path, name))
        for name, read in spec.items()
        if name in mapping
    }
    return cls(**values, **extra)


def _section(cls: type, spec: Spec, required: Collection[str] = ()) -> Reader:
    return lambda value, key: _build(cls, value, key, spec, required)


def _number(
    expected: str, ok: Callable[[float], bool] = lambda _: True, kind: type = float
) -> Reader:
    def read(value: object, key: str) -> Any:
        accepted = int if kind is int else (int, float)  # an int will do for a float
        if (
            isinstance(value, bool)
            or not isinstance(value, accepted)
            or not math.isfinite(value)
            or not ok(value)
        ):
            raise ConfigError(key, value, expected)
        return kind(value)

    return read


def _integer(minimum: int) -> Reader:
    return _number(f"an integer >= {minimum}", lambda x: x >= minimum, int)


def _duration(allow_zero: bool = False) -> Reader:
    return lambda value, key: parse_duration(value, key, allow_zero=allow_zero)


def _whole_seconds(value: object, key: str) -> int:
    seconds = parse_duration(value, key)
    if not seconds.is_integer():
        raise ConfigError(key, value, "a whole number of seconds")
    return int(seconds)


def _text(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, "a non-empty string")
    return value


def _choice(choices: object) -> Reader:
    allowed = get_args(choices)  # the choices are the Literal type the dataclass field has

    def read(value: object, key: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(key, value, f"one of {', '.join(map(repr, allowed))}")
        return value

    return read


def _list_of(item: Reader, expected: str, min_items: int = 0, max_items: int = 1 << 31) -> Reader:
    def read(value: object, key: str) -> tuple:
        if not isinstance(value, list) or not min_items <= len(value) <= max_items:
            raise ConfigError(key, value, expected)
        return tuple(item(element, f"{key}[{i}]") for i, element in enumerate(value))

    return read


def _host_port(value: object, key: str) -> str:
    match = _HOST_PORT_RE.fullmatch(value) if isinstance(value, str) else None
    if not isinstance(value, str) or not match or not 1 <= int(match[2]) <= 65535:
        raise ConfigError(key, value, "'host:port' with a port in 1..65535, e.g. '127.0.0.1:9108'")
    return value


def _servers(value: object, key: str) -> tuple[str, ...]:
    items = [server.strip() for server in value.split(",")] if isinstance(value, str) else value
    return _list_of(_host_port, "'host:port,...' or a list of 'host:port'", 1)(items, key)


def _url(value: object, key: str) -> str:
    if isinstance(value, str):
        if "@" in value.partition("://")[2].partition("/")[0]:  # user:password@ before the path
            raise ConfigError(key, mask_url(value), "a URL without credentials in it: put "
                              "them in basic_auth, with password_file or password_env")
        try:  # .port raises ValueError on a port that is not a number in range
            parts = urlsplit(value)
            if parts.scheme in ("http", "https") and parts.hostname and parts.port != 0:
                return value
        except ValueError:
            pass
        value = mask_url(value)  # an unparsable URL may hold a password with odd characters
    raise ConfigError(key, value, "an http:// or https:// URL with a host")


def _features(value: object, key: str) -> tuple[FeatureSpec, ...]:
    features = _list_of(_feature, "a non-empty list of {name: ...} features", 1)(value, key)
    for i, spec in enumerate(features):
        if spec.name in (earlier.name for earlier in features[:i]):
            raise ConfigError(f"{key}[{i}].name", spec.name, "a name no other feature has")
    return features


def _failure(value: object, key: str) -> FailureRule:
    raw = _mapping(value, key, ("any", "all", "for"), ())
    modes = [mode for mode in ("any", "all") if mode in raw]
    if len(modes) != 1:
        raise ConfigError(key, value, "exactly one of 'any' or 'all', a list of conditions")
    read = _list_of(_condition, "a non-empty list of {metric, op, value} conditions", 1)
    for_seconds = parse_duration(raw.get("for", 0), _join(key, "for"), allow_zero=True)
    return FailureRule(modes[0], read(raw[modes[0]], _join(key, modes[0])), for_seconds)


def _auto_or(read: Reader) -> Reader:
    """`auto` (None) or what `read` accepts."""
    return lambda value, key: None if value == "auto" else read(value, key)


def _alerting(value: object, key: str) -> AlertingConfig:
    alerting = _build(AlertingConfig, value, key, _ALERTING)
    if (alerting.resolve_threshold is not None and alerting.threshold is not None
            and alerting.resolve_threshold > alerting.threshold):
        expected = f"at most threshold ({alerting.threshold}), or alerts could never resolve"
        raise ConfigError(_join(key, "resolve_threshold"), alerting.resolve_threshold, expected)
    return alerting


_FRACTION = _number("a number in [0, 1]", lambda x: 0 <= x <= 1)
_FEATURE: Spec = {"name": _text, "transform": _choice(Transform), "center": _choice(Center)}
_feature = _section(FeatureSpec, _FEATURE, ("name",))
_CONDITION: Spec = {"metric": _text, "op": _choice(Op), "value": _number("a number")}
_condition = _section(Condition, _CONDITION, tuple(_CONDITION))
def _one_source(file: str | None, env: str | None, key: str, stem: str) -> None:
    """Exactly one of `<stem>_file` and `<stem>_env` is set."""
    if file is not None and env is not None:
        raise ConfigError(_join(key, f"{stem}_env"), env,
                          f"no value when {stem}_file is set: the secret comes from one of them")
    if file is None and env is None:
        raise ConfigError(_join(key, f"{stem}_file"), None, f"a file holding the {stem} (or "
                          f"{stem}_env: an environment variable holding it); never the value itself")


def _with_password(cls: type[T], spec: Spec) -> Reader:
    """A section with a username and a password from `password_file` or `password_env`."""
    def read(value: object, key: str) -> T:
        section = _build(cls, value, key, spec, ("username",))
        _one_source(section.password_file, section.password_env, key, "password")  # type: ignore[attr-defined]
        return section

    return read


_BASIC_AUTH: Spec = {"username": _text, "password_file": _text, "password_env": env_name}
_basic_auth = _with_password(BasicAuthConfig, _BASIC_AUTH)
_WEBHOOK: Spec = {"url": _url, "timeout": _duration(), "secret_file": _text, "secret_env": env_name,
                  "basic_auth": _basic_auth, "ca_file": _text}
_webhook_fields = _section(WebhookConfig, _WEBHOOK, ("url",))


def _webhook(value: object, key: str) -> WebhookConfig:
    webhook = _webhook_fields(value, key)
    if webhook.secret_file is not None and webhook.secret_env is not None:
        raise ConfigError(_join(key, "secret_env"), webhook.secret_env,
                          "no value when secret_file is set: the signing secret comes from one")
    return webhook


def _delivery(value: object, key: str) -> DeliveryConfig:
    delivery = _build(DeliveryConfig, value, key, _DELIVERY)
    if delivery.max_backoff_seconds < delivery.initial_backoff_seconds:
        expected = f"at least initial_backoff ({delivery.initial_backoff_seconds}s)"
        raise ConfigError(_join(key, "max_backoff"), delivery.max_backoff_seconds, expected)
    return delivery


def _flag(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


_DELIVERY: Spec = {
    "initial_backoff": _duration(),
    "max_backoff": _duration(),
    "max_age": _duration(),
    "max_pending": _integer(1),
}
_ALERTMANAGER: Spec = {
    "url": _url,
    "resend_interval": _duration(),
    "timeout": _duration(),
    "watchdog": _flag,
    "basic_auth": _basic_auth,
    "ca_file": _text,
}
_ALERTING: Spec = {
    "threshold": _auto_or(_FRACTION),
    "resolve_threshold": _auto_or(_FRACTION),
    "for_steps": _integer(1),
    "resolve_steps": _integer(1),
    "cooldown": _duration(allow_zero=True),
    "severity": _text,
    "webhooks": _list_of(_webhook, "a list of {url: ...} webhooks"),
    "external_url": _url,
    "delivery": _delivery,
    "alertmanager": _section(AlertmanagerConfig, _ALERTMANAGER, ("url",)),
}
_TRAINING: Spec = {
    "epochs": _integer(1),
    "batch_size": _integer(1),
    "learning_rate": _number("a positive number", lambda x: x > 0),
    "lstm_units": _list_of(_integer(1), "a list of 2 positive integers", 2, 2),
    "dropout": _number("a number in [0, 1)", lambda x: 0 <= x < 1),
    "validation_fraction": _number("a number in (0, 0.5)", lambda x: 0 < x < 0.5),
    "patience": _integer(1),
    "seed": _integer(0),
    "negative_stride": _integer(1),
    "max_windows": _integer(1000),
    "false_alerts_per_day": _number("a number > 0", lambda x: x > 0),
}
_STREAM: Spec = {
    "allowed_lateness": _duration(allow_zero=True),
    "max_missing_fraction": _number("a number in [0, 1)", lambda x: 0 <= x < 1),
    "max_future": _duration(),
    "silence": _duration(),
    "max_services": _integer(1),
}
def _kafka_ssl(value: object, key: str) -> KafkaSslConfig:
    spec: Spec = {"ca_file": _text, "cert_file": _text, "key_file": _text, "check_hostname": _flag}
    ssl = _build(KafkaSslConfig, value, key, spec)
    if (ssl.cert_file is None) != (ssl.key_file is None):
        missing = "key_file" if ssl.key_file is None else "cert_file"
        raise ConfigError(_join(key, missing), None,
                          "a value: a client certificate needs both cert_file and key_file")
    return ssl


_KAFKA: Spec = {
    "bootstrap_servers": _servers,
    "topic": _text,
    "group_id": _text,
    "dead_letter_topic": _text,
    "rebuild_messages": _integer(0),
    "max_poll_records": _integer(1),
    "poll_timeout": _duration(),
    "session_timeout": _duration(),
    "max_poll_interval": _duration(),
    "security_protocol": _choice(SecurityProtocol),
    "ssl": _kafka_ssl,
    "sasl": _with_password(KafkaSaslConfig, {**_BASIC_AUTH, "mechanism": _choice(SaslMechanism)}),
}


def _kafka(value: object, key: str) -> KafkaConfig:
    kafka = _build(KafkaConfig, value, key, _KAFKA)
    protocol = kafka.security_protocol
    if protocol.startswith("SASL_") and kafka.sasl is None:
        raise ConfigError(_join(key, "sasl"), None,
                          f"a sasl section (mechanism, username, password_file) with {protocol}")
    if kafka.sasl is not None and not protocol.startswith("SASL_"):
        raise ConfigError(_join(key, "security_protocol"), protocol,
                          "SASL_SSL (or SASL_PLAINTEXT) when a sasl section is given")
    if kafka.ssl is not None and not protocol.endswith("SSL"):
        raise ConfigError(_join(key, "security_protocol"), protocol,
                          "SSL or SASL_SSL when an ssl section is given")
    return kafka
_BYTES_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?)\s*(|[KMGT]i?B)")
_BYTE_UNITS = {"": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def _bytes(value: object, key: str) -> int:
    """A size: bytes (int) or a string with a unit, e.g. '500MB', '1GiB'."""
    match = _BYTES_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match:
        size = float(match[1]) * _BYTE_UNITS[match[2]]
    elif isinstance(value, int) and not isinstance(value, bool):
        size = float(value)
    else:
        size = 0.0
    if size < 1:
        raise ConfigError(key, value, "a positive size: bytes, or a string such as '500MB', '1GiB'")
    return int(size)


def parse_schedule(value: object, key: str = "retrain.schedule") -> str:
    """'interval <duration>' or a 5-field cron expression; validated by building the trigger."""
    from sentinel.schedule import trigger_for

    expected = "'interval <duration>' (e.g. 'interval 6h') or a 5-field cron string such as " \
               "'0 */6 * * *' (UTC)"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, expected)
    try:
        trigger_for(value)
    except (ValueError, ConfigError) as exc:
        detail = f"the interval must be {exc.expected}" if isinstance(exc, ConfigError) else exc
        raise ConfigError(key, value, f"{expected} ({detail})") from exc
    return value.strip()


def _retrain(value: object, key: str) -> RetrainConfig:
    retrain = _build(RetrainConfig, value, key, _RETRAIN)
    if retrain.holdout_seconds >= retrain.min_history_seconds:
        expected = f"less than min_history ({retrain.min_history_seconds:.0f}s): training uses " \
                   "the history before the holdout"
        raise ConfigError(_join(key, "holdout"), retrain.holdout_seconds, expected)
    return retrain


_MODEL: Spec = {"path": _text, "keep_versions": _integer(1), "check_interval": _duration()}
_HISTORY: Spec = {"enabled": _flag, "retention": _duration(), "max_bytes": _bytes,
                  "replica": _text}
_RETRAIN: Spec = {
    "enabled": _flag,
    "schedule": parse_schedule,
    "min_history": _duration(),
    "holdout": _duration(),
    "margin": _number("a number in [0, 1]", lambda x: 0 <= x <= 1),
    "metric": _choice(RetrainMetric),
    "timeout": _duration(),
    "threads": _integer(1),
}
_REQUIRED = ("step", "window", "horizon", "features", "failure")
_TOP: Spec = {
    "step": _whole_seconds,
    "window": _whole_seconds,
    "horizon": _whole_seconds,
    "features": _features,
    "failure": _failure,
    "alerting": _alerting,
    "training": _section(TrainingConfig, _TRAINING),
    "stream": _section(StreamConfig, _STREAM),
    "kafka": _kafka,
    "model": _section(ModelConfig, _MODEL),
    "metrics": _section(MetricsConfig, {
        "listen": _host_port,
        "tls": _section(ServerTlsConfig, {"cert_file": _text, "key_file": _text},
                        ("cert_file", "key_file")),
        "basic_auth": _with_password(MetricsAuthConfig, {**_BASIC_AUTH, "open_probes": _flag}),
    }),
    "state": _section(StateConfig, {"dir": _text}),
    "history": _section(HistoryConfig, _HISTORY),
    "retrain": _retrain,
}


def dump_config(config: Config) -> str:
    """The effective config as YAML, field names as parsed (durations in `*_seconds`).

    Secrets are not in a config (only where they come from), and a password in a URL is
    refused; URLs are masked all the same, so a dump is safe to paste into an issue.
    """
    from dataclasses import asdict

    def clean(node: object) -> object:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [clean(v) for v in node]
        if isinstance(node, str) and "://" in node:
            return mask_url(node)
        return node

    document = clean(asdict(config))
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
