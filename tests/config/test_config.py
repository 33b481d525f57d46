"""Config parsing: the shipped file loads, every mistake names its key and its bad value."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from sentinel.config.load import load_config, parse_config
from sentinel.config.readers import parse_duration
from sentinel.config.schema import (
    AlertingConfig,
    AlertmanagerConfig,
    Condition,
    Config,
    DeliveryConfig,
    FailureRule,
    FeatureSpec,
    KafkaConfig,
    MetricsConfig,
    ModelConfig,
    StreamConfig,
    TrainingConfig,
    WebhookConfig,
)
from sentinel.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "sentinel.yaml"
DELETE = object()  # a table value meaning "remove this key"


def _demo() -> dict:
    return yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))


def _with(doc: dict, path: str, value: object) -> dict:
    """A copy of `doc` with the value at a dotted path like `failure.any[1].op` replaced."""
    doc = copy.deepcopy(doc)
    *parents, last = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    node = doc
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


def test_shipped_config_loads_the_demo_defaults() -> None:
    cfg = load_config(SHIPPED)

    assert cfg == Config(
        step_seconds=10,
        window_seconds=600,
        horizon_seconds=300,
        features=(
            FeatureSpec("qps", "log1p", "window"),
            FeatureSpec("p99_ms", "log1p"),
            FeatureSpec("error_rate"),
            FeatureSpec("cpu"),
        ),
        failure=FailureRule(
            "any", (Condition("error_rate", ">=", 0.05), Condition("p99_ms", ">=", 2000.0)), 30.0
        ),
        alerting=AlertingConfig(
            threshold=None,
            resolve_threshold=None,
            for_steps=3,
            resolve_steps=6,
            cooldown_seconds=300.0,
            severity="critical",
            webhooks=(WebhookConfig("http://127.0.0.1:9000/alerts", timeout_seconds=5.0),),
        ),
        training=TrainingConfig(),
        stream=StreamConfig(allowed_lateness_seconds=30.0, max_missing_fraction=0.2),
        kafka=KafkaConfig(("127.0.0.1:9092",), "sentinel.metrics", "sentinel"),
        model=ModelConfig("model/"),
        metrics=MetricsConfig("127.0.0.1:9108"),
        source=str(SHIPPED),
    )
    assert (cfg.window_steps, cfg.horizon_steps, cfg.failure_for_steps) == (60, 30, 3)
    assert (cfg.metrics.host, cfg.metrics.port) == ("127.0.0.1", 9108)


def test_optional_sections_default_to_the_dataclass_defaults() -> None:
    minimal = {k: v for k, v in _demo().items() if k in ("step", "window", "horizon", "failure")}
    cfg = parse_config({**minimal, "features": [{"name": "qps"}]})

    assert cfg.features == (FeatureSpec("qps"),)
    assert (cfg.alerting, cfg.training, cfg.stream) == (
        AlertingConfig(),
        TrainingConfig(),
        StreamConfig(),
    )
    assert (cfg.kafka, cfg.model, cfg.metrics) == (KafkaConfig(), ModelConfig(), MetricsConfig())
    assert cfg.source == "<memory>"


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ("a:1,b:2", ("a:1", "b:2")),
        (" a:1 , b:2 ", ("a:1", "b:2")),
        (["a:1", "[::1]:9092"], ("a:1", "[::1]:9092")),
    ],
)
def test_bootstrap_servers_accept_a_string_or_a_list(servers: object, expected: tuple) -> None:
    cfg = parse_config(_with(_demo(), "kafka.bootstrap_servers", servers))

    assert cfg.kafka.bootstrap_servers == expected


@pytest.mark.parametrize("for_value", [0, "0s"])
def test_failure_for_zero_means_a_single_step(for_value: object) -> None:
    cfg = parse_config(_with(_demo(), "failure.for", for_value))

    assert cfg.failure.for_seconds == 0
    assert cfg.failure_for_steps == 1


def test_failure_all_mode_is_kept() -> None:
    doc = _demo()
    doc["failure"]["all"] = doc["failure"].pop("any")

    assert parse_config(doc).failure.mode == "all"


@pytest.mark.parametrize(
    ("path", "value", "key", "in_message"),
    [
        ("windw", "5m", "windw", "did you mean 'window'?"),
        ("alerting.treshold", 0.5, "alerting.treshold", "did you mean 'threshold'?"),
        ("alerting.webhooks[0].timout", "5s", "alerting.webhooks[0].timout", "'timeout'?"),
        ("features[0].transfrom", "log1p", "features[0].transfrom", "'transform'?"),
        ("alerting.threshold", "high", "alerting.threshold", "'high'"),
        ("training.epochs", 2.5, "training.epochs", "2.5"),
        ("training.epochs", True, "training.epochs", "True"),
        ("alerting.threshold", True, "alerting.threshold", "True"),
        ("failure.any[0].value", False, "failure.any[0].value", "False"),
        ("step", True, "step", "True"),
        ("step", "10x", "step", "'10x'"),
        ("step", "ten", "step", "'ten'"),
        ("step", "-5s", "step", "'-5s'"),
        ("step", 0, "step", "0"),
        ("step", "2.5s", "step", "'2.5s'"),
        ("alerting.cooldown", "-1m", "alerting.cooldown", "'-1m'"),
        ("window", "95s", "window", "'95s'"),
        ("window", "10s", "window", "'10s'"),
        ("horizon", "5s", "horizon", "'5s'"),
        ("horizon", "15s", "horizon", "'15s'"),
        ("alerting.threshold", 1.5, "alerting.threshold", "1.5"),
        ("alerting.resolve_threshold", 1.2, "alerting.resolve_threshold", "1.2"),
        ("alerting.for_steps", 0, "alerting.for_steps", "0"),
        ("failure.all", [{"metric": "cpu", "op": ">", "value": 1}], "failure", "'all'"),
        ("failure.any", [], "failure.any", "[]"),
        ("failure.any", DELETE, "failure", "{'for': '30s'}"),
        ("failure.any[1].op", "=>", "failure.any[1].op", "'=>'"),
        ("failure.any[0].metric", "", "failure.any[0].metric", "''"),
        ("failure.any[0].value", DELETE, "failure.any[0].value", "required"),
        ("features", [], "features", "[]"),
        ("features[1].name", "qps", "features[1].name", "'qps'"),
        ("features[2].transform", "sqrt", "features[2].transform", "'sqrt'"),
        ("features[0].center", "mean", "features[0].center", "'mean'"),
        ("metrics.listen", "localhost", "metrics.listen", "'localhost'"),
        ("metrics.listen", "127.0.0.1:70000", "metrics.listen", "'127.0.0.1:70000'"),
        ("metrics.listen", 9108, "metrics.listen", "9108"),
        ("kafka.bootstrap_servers", "a:1,b", "kafka.bootstrap_servers[1]", "'b'"),
        ("kafka.topic", None, "kafka.topic", "None"),
        ("alerting.webhooks[0].url", "ftp://h/x", "alerting.webhooks[0].url", "'ftp://h/x'"),
        ("alerting.webhooks[0].url", "http://", "alerting.webhooks[0].url", "'http://'"),
        ("alerting.webhooks[0].url", "http://h:99999/", "alerting.webhooks[0].url", "99999"),
        ("training.lstm_units", [48], "training.lstm_units", "[48]"),
        ("training.lstm_units", [48, 0], "training.lstm_units[1]", "0"),
        ("training.validation_fraction", 0.5, "training.validation_fraction", "0.5"),
        ("stream.max_missing_fraction", 1, "stream.max_missing_fraction", "1"),
        ("stream", "none", "stream", "'none'"),
        ("horizon", DELETE, "horizon", "required"),
        ("features", DELETE, "features", "required"),
    ],
)
def test_bad_config_names_the_key_and_the_value(
    path: str, value: object, key: str, in_message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_with(_demo(), path, value))

    assert caught.value.key == key
    assert in_message in str(caught.value)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping") as caught:
        parse_config(["step", "10s"])

    assert "['step', '10s']" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "in_message"),
    [
        ("step: 10s\nwindow: [5m\n", "line 2"),
        ("step: 10s\n  window: 5m\n", "line 2"),
        ("", "empty file"),
        ("# only a comment\n", "empty file"),
    ],
)
def test_unreadable_yaml_is_a_config_error_naming_the_file(
    tmp_path: Path, text: str, in_message: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.key == "<file>"
    assert str(path) in str(caught.value)
    assert in_message in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file") as caught:
        load_config(tmp_path / "absent.yaml")

    assert caught.value.key == "<file>"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10s", 10),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("1.5h", 5400),
        (" 30s ", 30),
        ("45", 45),
        (15, 15),
        (2.5, 2.5),
    ],
)
def test_duration_is_converted_to_seconds(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["10x", "s", "", "1e3s", "-5s", "5 m s", 0, -1, True, None, [10]])
def test_bad_duration_is_rejected_with_its_value(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "cooldown")

    assert caught.value.key == "cooldown"
    assert repr(value) in str(caught.value)


def test_zero_duration_is_allowed_where_asked() -> None:
    assert parse_duration("0s", allow_zero=True) == 0


def test_resolve_threshold_above_threshold_is_refused() -> None:
    doc = _with(_demo(), "alerting.threshold", 0.5)
    with pytest.raises(ConfigError) as caught:
        parse_config(_with(doc, "alerting.resolve_threshold", 0.6))
    assert caught.value.key == "alerting.resolve_threshold"
    assert "0.6" in str(caught.value)


@pytest.mark.parametrize(
    ("threshold", "resolve", "operating", "expected"),
    [
        ("auto", "auto", 0.8, (0.8, 0.48)),
        ("auto", 0.3, 0.8, (0.8, 0.3)),
        ("auto", "auto", None, (0.5, 0.3)),
        (0.7, "auto", 0.2, (0.7, 0.42)),
        ("auto", 0.5, 0.4, (0.4, 0.24)),  # a resolve above the model's threshold is lowered
    ],
)
def test_auto_thresholds_resolve_against_the_model(
    threshold: object, resolve: object, operating: float | None, expected: tuple[float, float]
) -> None:
    doc = _with(_with(_demo(), "alerting.threshold", threshold), "alerting.resolve_threshold", resolve)
    alerting = parse_config(doc).alerting.resolved(operating)
    assert (alerting.threshold, alerting.resolve_threshold) == pytest.approx(expected)


def test_delivery_and_alertmanager_keys_are_read_with_their_units() -> None:
    doc = _with(_demo(), "alerting.delivery",
                {"initial_backoff": "0.5s", "max_backoff": "2m", "max_age": "30m", "max_pending": 50})
    doc = _with(doc, "alerting.alertmanager",
                {"url": "http://am:9093", "resend_interval": "30s", "timeout": 2, "watchdog": False})
    doc = _with(doc, "alerting.external_url", "https://grafana.example.com/d/sentinel")

    alerting = parse_config(doc).alerting

    assert alerting.delivery == DeliveryConfig(0.5, 120.0, 1800.0, 50)
    assert alerting.alertmanager == AlertmanagerConfig("http://am:9093", 30.0, 2.0, False)
    assert alerting.external_url == "https://grafana.example.com/d/sentinel"


def test_delivery_defaults_and_alertmanager_is_off_unless_configured() -> None:
    cfg = parse_config(_with(_demo(), "alerting.delivery", DELETE))

    assert cfg.alerting.delivery == DeliveryConfig(1.0, 60.0, 3600.0, 10000)
    assert cfg.alerting.alertmanager is None
    assert load_config(SHIPPED).alerting.delivery == DeliveryConfig()  # the demo documents them
    am = parse_config(_with(_demo(), "alerting.alertmanager", {"url": "http://am:9093"}))
    assert am.alerting.alertmanager == AlertmanagerConfig("http://am:9093", 60.0, 5.0, True)


@pytest.mark.parametrize(
    ("path", "value", "key", "in_message"),
    [
        ("alerting.delivery.initial_backoff", 0, "alerting.delivery.initial_backoff", "0"),
        ("alerting.delivery.max_backoff", "500ms", "alerting.delivery.max_backoff", "'500ms'"),
        ("alerting.delivery.max_backoff", "0.5s", "alerting.delivery.max_backoff", "0.5"),
        ("alerting.delivery.max_age", "-1h", "alerting.delivery.max_age", "'-1h'"),
        ("alerting.delivery.max_pending", 0, "alerting.delivery.max_pending", "0"),
        ("alerting.delivery.max_atempts", 20, "alerting.delivery.max_atempts", "'max_age'?"),
        ("alerting.alertmanager", {"resend_interval": "1m"}, "alerting.alertmanager.url",
         "required"),
        ("alerting.alertmanager", {"url": "am:9093"}, "alerting.alertmanager.url", "'am:9093'"),
        ("alerting.alertmanager", {"url": "http://am:9093", "watchdog": "yes"},
         "alerting.alertmanager.watchdog", "'yes'"),
        ("alerting.alertmanager", {"url": "http://am:9093", "resend_interval": 0},
         "alerting.alertmanager.resend_interval", "0"),
        ("alerting.webhooks[0]", {"url": "http://h/", "secret_file": "/s", "secret_env": "S"},
         "alerting.webhooks[0].secret_env", "'S'"),
        ("alerting.external_url", "grafana", "alerting.external_url", "'grafana'"),
    ],
)
def test_bad_delivery_key_names_the_key_and_the_value(
    path: str, value: object, key: str, in_message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_with(_demo(), path, value))

    assert caught.value.key == key
    assert in_message in str(caught.value)


_SASL = {"mechanism": "SCRAM-SHA-512", "username": "sentinel", "password_file": "/etc/kafka.pw"}


@pytest.mark.parametrize(
    ("path", "value", "key", "in_message"),
    [
        ("kafka.security_protocol", "TLS", "kafka.security_protocol", "'TLS'"),
        ("kafka.security_protocol", "SASL_SSL", "kafka.sasl", "SASL_SSL"),
        ("kafka.sasl", _SASL, "kafka.security_protocol", "'PLAINTEXT'"),
        ("kafka.ssl", {"ca_file": "/ca.pem"}, "kafka.security_protocol", "'PLAINTEXT'"),
        ("kafka.sasl", {**_SASL, "mechanism": "GSSAPI"}, "kafka.sasl.mechanism", "'GSSAPI'"),
        ("kafka.sasl", {"mechanism": "PLAIN", "password_file": "/p"}, "kafka.sasl.username",
         "required"),
        ("kafka.sasl", {"mechanism": "PLAIN", "username": "u"}, "kafka.sasl.password_file",
         "password_env"),
        ("kafka.sasl", {**_SASL, "password_env": "PW"}, "kafka.sasl.password_env", "'PW'"),
        ("kafka.sasl", {**_SASL, "password": "hunter2"}, "kafka.sasl.password",
         "did you mean"),
        ("metrics.tls", {"cert_file": "/c.pem"}, "metrics.tls.key_file", "required"),
        ("metrics.tls", "on", "metrics.tls", "'on'"),
        ("metrics.basic_auth", {"username": "p", "password_file": "/p", "open_probes": "yes"},
         "metrics.basic_auth.open_probes", "'yes'"),
        ("metrics.basic_auth", {"username": "p"}, "metrics.basic_auth.password_file", "never"),
        ("alerting.webhooks[0].basic_auth", {"username": "b", "password_env": "bad name"},
         "alerting.webhooks[0].basic_auth.password_env", "environment variable"),
        ("alerting.webhooks[0].url", "https://u:p@h/x", "alerting.webhooks[0].url", "basic_auth"),
        ("alerting.webhooks[0].ca_file", "", "alerting.webhooks[0].ca_file", "''"),
        ("alerting.webhooks[0].secret_env", "not a name!", "alerting.webhooks[0].secret_env",
         "environment variable"),
    ],
)
def test_bad_security_key_names_the_key_and_the_value(
    path: str, value: object, key: str, in_message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_with(_demo(), path, value))

    assert caught.value.key == key
    assert in_message in str(caught.value)


def test_kafka_client_certificate_needs_both_files() -> None:
    doc = _with(_with(_demo(), "kafka.security_protocol", "SSL"), "kafka.ssl", {"cert_file": "/c"})

    with pytest.raises(ConfigError) as caught:
        parse_config(doc)

    assert caught.value.key == "kafka.ssl.key_file"


_INPUT = {"format": "prometheus-kafka-adapter", "topic": "prometheus", "service_label": "job",
          "metrics": [{"name": "health", "source": {"metric": "up"}}]}


def test_input_section_and_feature_sources_parse_into_typed_objects() -> None:
    doc = _with(_with(_demo(), "input", _INPUT), "features[0].source",
                {"metric": "http_requests_total", "counter": True, "match": {"code": "2.."},
                 "aggregate": "sum", "promql": "sum by (job) (rate(http_requests_total[1m]))"})
    cfg = parse_config(doc)
    assert cfg.input.format == "prometheus-kafka-adapter" and cfg.input.topic == "prometheus"
    assert cfg.features[0].source is not None and cfg.features[0].source.match == (("code", "2.."),)
    assert [m.name for m in cfg.input.sources(cfg.features)] == ["qps", "health"]
    assert parse_config(_demo()).input.format == "sentinel"  # the contract format by default


@pytest.mark.parametrize(
    ("path", "value", "key", "in_message"),
    [
        ("input.format", "influx", "input.format", "'influx'"),
        ("input.timestamp_units", "1m", "input.timestamp_units", "'1m'"),
        ("input.topic", "", "input.topic", "''"),
        ("input.metrics[0].name", "qps", "input.metrics[0].name", "'qps'"),
        ("input.metrics[0].source", {}, "input.metrics[0].source.metric", "promql"),
        ("input.metrics[0].source", {"metric": "x", "aggregate": "median"},
         "input.metrics[0].source.aggregate", "'median'"),
        ("input.metrics[0].source", {"metric": "x", "histogram_quantile": 99},
         "input.metrics[0].source.histogram_quantile", "99"),
        ("input.metrics[0].source", {"metric": "x", "counter": True, "histogram_quantile": 0.9},
         "input.metrics[0].source.counter", "True"),
        ("input.metrics[0].source", {"metric": "x", "match": {"code": "5(("}},
         "input.metrics[0].source.match.code", "'5(('"),
        ("input.metrics[0].source", {"metric": "x", "match": ["code"]},
         "input.metrics[0].source.match", "['code']"),
    ],
)
def test_bad_input_config_names_the_key_and_the_value(
    path: str, value: object, key: str, in_message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_with(_with(_demo(), "input", _INPUT), path, value))

    assert caught.value.key == key
    assert in_message in str(caught.value)
