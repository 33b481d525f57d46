"""Sentinel's configuration: YAML parsed once into frozen, typed objects.

    >>> cfg = load_config("config/sentinel.yaml")
    >>> cfg.window_steps
    30

Every error is a :class:`ConfigError` naming the key, the bad value and what is expected.
Secrets are never config values: a config names the file or environment variable that holds
one (`*_file` / `*_env`, read at start-up by sentinel.config.secrets), so a config can be printed
(`sentinel check-config --dump`) and logged as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from sentinel.config.readers import (
    _FRACTION,
    Spec,
    _auto_or,
    _build,
    _bytes,
    _choice,
    _duration,
    _flag,
    _host_port,
    _integer,
    _join,
    _list_of,
    _mapping,
    _number,
    _section,
    _servers,
    _text,
    _url,
    _whole_seconds,
    _with_password,
    parse_duration,
)
from sentinel.config.schedule import parse_schedule
from sentinel.config.schema import (
    Aggregation,
    AlertingConfig,
    AlertmanagerConfig,
    BasicAuthConfig,
    CalendarConfig,
    Center,
    Condition,
    Config,
    DeliveryConfig,
    FailureRule,
    FeatureSpec,
    HistoryConfig,
    InputConfig,
    InputFormat,
    KafkaConfig,
    KafkaSaslConfig,
    KafkaSslConfig,
    Labels,
    MappedMetric,
    MetricsAuthConfig,
    MetricsConfig,
    ModelConfig,
    Op,
    PrometheusConfig,
    RetrainConfig,
    RetrainMetric,
    SaslMechanism,
    SecurityProtocol,
    ServerTlsConfig,
    SourceSpec,
    StateConfig,
    StreamConfig,
    TimestampUnits,
    TrainingConfig,
    Transform,
    WebhookConfig,
)
from sentinel.config.secrets import env_name, mask_url
from sentinel.config.yaml_file import read_yaml
from sentinel.core.topology import Topology, topology_problems
from sentinel.errors import ConfigError


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; every problem is a :class:`ConfigError`."""
    raw = read_yaml(path)  # bounded size and alias expansion, no duplicate keys
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
    names = set(cfg.feature_names)
    for i, mapped in enumerate(cfg.input.metrics):
        if mapped.name in names:
            raise ConfigError(f"input.metrics[{i}].name", mapped.name,
                              "a name no feature or other input metric has")
        names.add(mapped.name)
    if cfg.topology_file is not None:
        read_topology_file(cfg.topology_file)  # a bad file is a start-up error, not a 3 a.m. one
    if cfg.training.incidents is not None and cfg.training.labels == "rule":
        raise ConfigError("training.labels", "rule", "'incidents' or 'both' when "
                          "training.incidents is set (or leave training.incidents out)")
    if cfg.retrain.enabled and not cfg.history.enabled:
        raise ConfigError("retrain.enabled", True, "false while history.enabled is false: "
                          "retraining learns from the history store")
    return cfg


def _topology_map(value: object, key: str) -> dict[str, tuple[str, ...]]:
    """A caller -> [dependencies] mapping, every name a non-empty string."""
    if not isinstance(value, dict):
        raise ConfigError(key, value, "a mapping of caller service -> list of its dependencies, "
                          "e.g. {checkout: [payment, inventory]}")
    mapping = {}
    for caller, deps in value.items():
        if not isinstance(caller, str) or not caller.strip():
            raise ConfigError(f"{key}.{caller}", caller, "a service name (a non-empty string)")
        mapping[caller] = _list_of(_text, "a list of dependency service names")(
            deps, f"{key}.{caller}")
    return mapping


def _topology(value: object, key: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Unknown services are allowed (they may appear later). Self-dependencies and cycles
    are no error: `topology_warnings` reports them, and `sentinel.core.topology.Topology`
    drops a self-dependency."""
    mapping = _topology_map(value, key)
    return tuple((caller, tuple(dict.fromkeys(mapping[caller]))) for caller in sorted(mapping))


MAX_TOPOLOGY_FILE_BYTES = 64 << 20


def read_topology_file(path: str | Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The caller -> [dependencies] map in a YAML or JSON file (``.json``: JSON, any size up
    to MAX_TOPOLOGY_FILE_BYTES; otherwise YAML, bounded like a config); ConfigError naming
    `topology_file` and the problem."""
    import json

    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            if path.stat().st_size > MAX_TOPOLOGY_FILE_BYTES:
                raise ConfigError("topology_file", str(path),
                                  f"a file of at most {MAX_TOPOLOGY_FILE_BYTES} bytes")
            document = json.loads(path.read_text(encoding="utf-8"))
        else:
            document = read_yaml(path)
    except (OSError, ValueError) as exc:
        raise ConfigError("topology_file", str(path), f"a readable YAML/JSON file ({exc})") from exc
    except ConfigError as exc:
        if exc.key == "topology_file":
            raise
        raise ConfigError("topology_file", str(path), f"a readable YAML/JSON file ({exc})") from exc
    return _topology(document if document is not None else {}, f"topology_file({path})")


def _topology_mapping(config: Config) -> dict[str, list[str]]:
    """caller -> dependencies from `topology:` and the current content of `topology_file`."""
    edges = list(config.topology)
    if config.topology_file is not None:
        edges += read_topology_file(config.topology_file)
    mapping: dict[str, list[str]] = {}
    for caller, deps in edges:
        mapping.setdefault(caller, []).extend(deps)
    return mapping


def effective_topology(config: Config) -> Topology:
    """The topology in force: `topology:` and the current content of `topology_file`."""
    return Topology.of(_topology_mapping(config))


def topology_warnings(config: Config) -> list[str]:
    """Self-dependencies and cycles in the effective topology (inline and file): reported
    by `sentinel check-config` and logged by the daemon, never an error."""
    return topology_problems(_topology_mapping(config))


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


def _alerting(value: object, key: str) -> AlertingConfig:
    alerting = _build(AlertingConfig, value, key, _ALERTING)
    if (alerting.resolve_threshold is not None and alerting.threshold is not None
            and alerting.resolve_threshold > alerting.threshold):
        expected = f"at most threshold ({alerting.threshold}), or alerts could never resolve"
        raise ConfigError(_join(key, "resolve_threshold"), alerting.resolve_threshold, expected)
    return alerting
def _matchers(value: object, key: str) -> tuple[tuple[str, str], ...]:
    raw = _mapping(value, key, value if isinstance(value, dict) else (), ())
    for label, pattern in raw.items():
        if not isinstance(label, str) or not isinstance(pattern, str):
            raise ConfigError(f"{key}.{label}", pattern, "a label name mapped to a regex string")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{key}.{label}", pattern, f"a valid regex ({exc})") from exc
    return tuple(sorted(raw.items()))


_SOURCE: Spec = {
    "metric": _text,
    "match": _matchers,
    "aggregate": _choice(Aggregation),
    "counter": _flag,
    "histogram_quantile": _number("a quantile in (0, 1), e.g. 0.99", lambda x: 0 < x < 1),
    "scale": _number("a non-zero number", lambda x: x != 0),
    "promql": _text,
}


def _source(value: object, key: str) -> SourceSpec:
    source = _build(SourceSpec, value, key, _SOURCE)
    if source.metric is None and source.promql is None:
        raise ConfigError(_join(key, "metric"), None,
                          "a series name (or promql: an expression for `sentinel backfill`)")
    if source.counter and source.histogram_quantile is not None:
        raise ConfigError(_join(key, "counter"), True,
                          "false with histogram_quantile: bucket counters are rated already")
    return source


_FEATURE: Spec = {"name": _text, "transform": _choice(Transform), "center": _choice(Center),
                  "source": _source}
_feature = _section(FeatureSpec, _FEATURE, ("name",))
_CONDITION: Spec = {"metric": _text, "op": _choice(Op), "value": _number("a number")}
_condition = _section(Condition, _CONDITION, tuple(_CONDITION))


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
    "drivers": _integer(0),
    "drivers_refresh": _duration(),
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
    "labels": _choice(Labels),
    "incidents": _text,
    "incidents_from": lambda value, key: parse_instant(value, key),
}


def parse_instant(value: object, key: str) -> float:
    """A point in time: Unix seconds or an RFC 3339 string with a time zone."""
    import datetime

    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:  # YAML parses these
        return value.timestamp()
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.timestamp()
    raise ConfigError(key, value, "Unix seconds or an RFC 3339 time with a zone, e.g. "
                                  "2023-12-14T00:00:00Z")
_STREAM: Spec = {
    "allowed_lateness": _duration(allow_zero=True),
    "max_missing_fraction": _number("a number in [0, 1)", lambda x: 0 <= x < 1),
    "max_future": _duration(),
    "silence": _duration(),
    "max_services": _integer(1),
    "dependency_wait": _duration(allow_zero=True),
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
    "steps_topic": _text,
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
_INPUT: Spec = {
    "format": _choice(InputFormat),
    "topic": _text,
    "group_id": _text,
    "service_label": _text,
    "timestamp_units": _choice(TimestampUnits),
    "allowed_lateness": _duration(allow_zero=True),
    "metrics": _list_of(_section(MappedMetric, {"name": _text, "source": _source}, ("name", "source")),
                        "a list of {name, source} metrics"),
    "metrics_listen": _host_port,
    "prometheus": lambda value, key: _prometheus(value, key),
}


def _prometheus(value: object, key: str) -> PrometheusConfig:
    spec: Spec = {"basic_auth": _basic_auth, "bearer_token_file": _text, "bearer_token_env": env_name,
                  "ca_file": _text, "timeout": _duration(), "rate_window": _duration()}
    prometheus = _build(PrometheusConfig, value, key, spec)
    tokens = [name for name in ("bearer_token_file", "bearer_token_env") if getattr(prometheus, name)]
    if len(tokens) > 1 or (tokens and prometheus.basic_auth is not None):
        raise ConfigError(_join(key, tokens[-1]), getattr(prometheus, tokens[-1]),
                          "no value: give one of basic_auth, bearer_token_file, bearer_token_env")
    return prometheus
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
    "input": _section(InputConfig, _INPUT),
    "topology": lambda value, key: _topology(value, key),
    "topology_file": _text,
    "calendar": _section(CalendarConfig, {"file": _text, "topic": _text,
                                          "reload_interval": _duration()}),
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
    document["topology"] = {caller: list(deps) for caller, deps in config.topology}  # as written
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
