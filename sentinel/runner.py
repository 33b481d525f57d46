"""Wiring for `sentinel run`: build the daemon's parts from a config, run it, map the exit.

    >>> app = App.create(load_config("config/sentinel.yaml"))   # SentinelError: exit 2
    >>> exit_code = app.run()                                   # 0 after stop(), 1 on a bug

Start-up order: model, metrics registry, notifier (re-loads the outbox), history store,
HTTP server, retraining scheduler, consumer (lazily, in the loop: a broker that is down at
start-up is retried, not fatal). Shutdown runs in reverse: consumer (commit, leave the
group), retraining (a training child in flight is killed), history store (fsynced),
dead-letter producer, notifier (pending deliveries stay in the outbox), HTTP server.

A missing model directory is not fatal: Sentinel consumes, keeps windows and exports
metrics, but scores nothing and is not ready. A model that is present but unusable
(corrupt, tampered with, not matching the config) stops start-up with a ModelError.
`model.path` is a model directory or a registry (sentinel.retrain.registry); a model promoted in the
registry later is swapped in without a restart (sentinel.daemon.hotswap).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from sentinel.config.load import effective_topology, topology_warnings
from sentinel.config.schema import Config
from sentinel.core.pipeline import Pipeline
from sentinel.daemon.calendar_source import LiveCalendar
from sentinel.daemon.daemon import Daemon
from sentinel.daemon.feedback_store import FeedbackEndpoint
from sentinel.daemon.health import HealthServer, HealthState
from sentinel.daemon.history_store import HistoryStore
from sentinel.daemon.hotswap import ModelWatcher
from sentinel.daemon.kafka_io import DeadLetters, KafkaSource, client_security
from sentinel.daemon.rebuild_hints import RebuildHints
from sentinel.daemon.steps_topic import StepsTopic
from sentinel.daemon.telemetry import Telemetry
from sentinel.daemon.topology_watch import TopologyWatcher
from sentinel.model.artifact import LoadedModel, load_model
from sentinel.retrain.registry import ModelRegistry
from sentinel.retrain.scheduler import Retrainer
from sentinel.sinks import Notifier

log = logging.getLogger(__name__)

STALL_FACTOR = 3  # /healthz fails after this many x max(poll timeout, 10 s) without a poll
STOP_TIMEOUT_SECONDS = 3.0  # for the notifier's workers to finish an attempt in flight


def load_model_if_present(config: Config) -> LoadedModel | None:
    """None (with a warning) when model.path holds no model yet (missing, empty, or a registry
    with no current version); ModelError when the model is unusable."""
    path = Path(config.model.path)
    registry = ModelRegistry(path)
    target = registry.current() if registry.is_registry else None
    if target is not None:
        path = target.path
    elif registry.is_registry or not path.exists() or (path.is_dir() and not any(path.iterdir())):
        log.warning("no model at %s: consuming and exporting metrics, but no risk is scored "
                    "and /readyz fails until a model is trained there (sentinel train) or "
                    "promoted (sentinel models promote)", path)
        return None
    model = load_model(path, config)
    log.info("model %s loaded from %s", model.version, path)
    return model


def model_written_ts(model: LoadedModel) -> float:
    """When the artifact was written: from its version (20251124T101500Z-...) or its file."""
    return model.written_ts()


class App:
    def __init__(self, config: Config, daemon: Daemon, notifier: Notifier, server: HealthServer,
                 dead_letters: DeadLetters | None, history: HistoryStore | None = None,
                 retrainer: Retrainer | None = None) -> None:
        self.config, self.daemon, self.notifier = config, daemon, notifier
        self.server, self.dead_letters = server, dead_letters
        self.history, self.retrainer = history, retrainer
        self.calendar: LiveCalendar | None = None

    @classmethod
    def create(cls, config: Config, registry: CollectorRegistry | None = None,
               wall_clock: Callable[[], float] = time.time) -> App:
        """Everything but the consumer; raises SentinelError (exit 2) on a bad set-up."""
        model = load_model_if_present(config)
        registry = registry or CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        telemetry = Telemetry(registry)
        if model is not None:
            telemetry.set_model(model.version, model_written_ts(model), wall_clock,
                                model.alerting(config).threshold)
        for warning in topology_warnings(config):
            log.warning("topology: %s", warning)
        security = client_security(config.kafka)  # TLS context, SASL password: ConfigError now
        calendar = LiveCalendar.from_config(config, security)  # ConfigError now for a bad file
        pipeline = Pipeline(config, model.scorer if model else None,
                            model.alerting(config) if model else None,
                            {"calendar": calendar} if calendar is not None else None,
                            topology=effective_topology(config))
        notifier = Notifier(config.alerting, config.state.dir, registry=registry)
        stall_after = STALL_FACTOR * max(config.kafka.poll_timeout_seconds, 10.0)
        health = HealthState(stall_after)
        health.set_check("model", model is not None,
                         f"version {model.version} from {model.path}" if model else
                         f"no model at {config.model.path}: train one with `sentinel train`")
        server = HealthServer.from_config(config.metrics, registry, health, FeedbackEndpoint(
            Path(config.state.dir), registry, wall_clock))
        dead_letters = None
        if config.kafka.dead_letter_topic:
            dead_letters = DeadLetters(config.kafka.bootstrap_servers,
                                       config.kafka.dead_letter_topic, config.kafka.topic,
                                       security, on_undeliverable=lambda reason, _error:
                                       telemetry.dead_letters_failed.labels(reason).inc())

        hints = RebuildHints(Path(config.state.dir) / "rebuild-hints.json", config.kafka.topic,
                             config.kafka.group_id)

        def connect(on_revoked: Callable[[list[int]], None],
                    on_assigned: Callable[[list[int]], None]) -> KafkaSource:
            return KafkaSource(config.kafka, on_revoked, on_assigned, security=security,
                               rebuild_hint=hints.get)

        models = ModelRegistry(config.model.path, config.model.keep_versions)
        watcher = ModelWatcher(models, config, model, registry)
        history = HistoryStore.from_config(config, registry) if config.history.enabled else None
        retrainer = None
        if config.retrain.enabled and history is not None:  # config: retrain needs history
            retrainer = Retrainer(config, models, history, lambda: watcher.serving, registry)
        steps: Callable[[], StepsTopic] | None = None
        if config.kafka.steps_topic is not None:  # several replicas share dependency steps
            lookback = (config.window_steps * config.step_seconds
                        + config.stream.dependency_wait_seconds
                        + config.stream.allowed_lateness_seconds)

            def open_steps() -> StepsTopic:
                return StepsTopic.from_config(config.kafka, security, lookback)

            steps = open_steps

        daemon = Daemon(config, pipeline, connect, notifier, telemetry, health, dead_letters,
                        wall_clock=wall_clock, history=history, models=watcher,
                        rebuild_hints=hints, topology=TopologyWatcher(config, registry),
                        steps=steps)
        app = cls(config, daemon, notifier, server, dead_letters, history, retrainer)
        app.calendar = calendar
        return app

    def run(self) -> int:
        """Serve until `stop()`: 0 then, 1 after an unexpected error (logged with traceback)."""
        self.server.start()
        self.notifier.start()
        if self.retrainer is not None:
            self.retrainer.start()
        if self.calendar is not None:
            self.calendar.start()
        log.info("consuming %s as group %s from %s", self.config.kafka.topic,
                 self.config.kafka.group_id, ",".join(self.config.kafka.bootstrap_servers))
        if self.config.input.format != "sentinel":
            log.info("input.format is %s: `sentinel ingest` turns %s into the Sentinel samples "
                     "this daemon reads from %s", self.config.input.format,
                     self.config.input.topic, self.config.kafka.topic)
        try:
            self.daemon.run()
        except Exception:
            log.exception("sentinel run stopped by an unexpected error; exiting 1 so the "
                          "supervisor restarts it (uncommitted records are read again)")
            return 1
        finally:
            if self.retrainer is not None:
                self.retrainer.stop()
            if self.calendar is not None:
                self.calendar.stop()
            if self.history is not None:
                self.history.close()
            if self.dead_letters is not None:
                self.dead_letters.close()
            self.notifier.stop(STOP_TIMEOUT_SECONDS)
            self.server.stop()
        log.info("stopped")
        return 0

    def stop(self) -> None:
        self.daemon.stop()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT ask the loop to stop; a second one is not needed (nor special)."""
        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("%s received: finishing the batch, committing, stopping",
                     signal.Signals(signum).name)
            self.stop()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handle)
            signal.signal(signal.SIGINT, handle)
