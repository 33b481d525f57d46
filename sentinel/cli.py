"""The `sentinel` command line (also `python -m sentinel`).

Exit codes: 0 success, 1 unexpected error, 2 bad usage, bad config, bad data or bad model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sentinel.errors import SentinelError
from sentinel.logs import setup_logging

log = logging.getLogger("sentinel")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.handler(args) or 0)
    except SentinelError as exc:
        print(f"sentinel {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _check_config(args: argparse.Namespace) -> int:
    from sentinel.config.load import load_config

    config = load_config(args.config)
    if args.dump:
        from sentinel.config.load import dump_config

        print(dump_config(config), end="")
        return 0
    print(f"{args.config}: OK (step {config.step_seconds}s, window {config.window_steps} steps, "
          f"horizon {config.horizon_steps} steps, features {', '.join(config.feature_names)})")
    if config.calendar.file is not None:  # the daemon refuses a bad one at start-up too
        from sentinel.config.calendar_file import read_calendar

        events = read_calendar(config.calendar.file)
        print(f"{config.calendar.file}: OK ({len(events)} planned events)")
    if config.training.incidents is not None:
        from sentinel.training.incidents import read_incidents

        incidents = read_incidents(config.training.incidents)
        print(f"{config.training.incidents}: OK ({len(incidents)} incidents)")
    from sentinel.config.load import effective_topology, topology_warnings

    topology = effective_topology(config)
    if topology:
        print(f"topology: {len(topology.edges)} callers, at most {topology.max_dependencies} "
              "dependencies each")
    for warning in topology_warnings(config):
        print(f"warning: topology: {warning}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from sentinel.sim import simulate

    if (args.out is None) == (args.kafka is None):
        raise SentinelError("give exactly one of --out FILE.jsonl or --kafka HOST:PORT")
    if args.kafka and not args.topic:
        raise SentinelError("--kafka needs --topic")
    sim = simulate.simulate(args.services, args.days, args.seed,
                            args.start if args.start is not None else simulate.DEFAULT_START_TS)
    if args.out:
        count = simulate.write_jsonl(sim.samples, Path(args.out))
    else:
        security = None
        if args.config:  # the daemon's TLS/SASL settings, for a secured broker
            from sentinel.config.load import load_config
            from sentinel.daemon.kafka_io import client_security

            security = client_security(load_config(args.config).kafka)
        count = simulate.produce_kafka(sim.samples, args.kafka, args.topic, speed=args.speed,
                                       security=security)
    if args.calendar_out:
        simulate.write_calendar(sim.calendar, Path(args.calendar_out))
    if args.topology_out:
        simulate.write_topology(simulate.topology(args.services), Path(args.topology_out))
    print(json.dumps({"written": count, **sim.summary}))
    return 0


def _train(args: argparse.Namespace) -> int:
    from sentinel.config.load import load_config
    from sentinel.training.backtest import json_text
    from sentinel.training.train import label_sources, train

    config = load_config(args.config)
    if args.labels is not None:
        config = replace(config, training=replace(config.training, labels=args.labels))
    if args.incidents_from is not None:
        config = replace(config, training=replace(config.training,
                                                  incidents_from=_instant(args.incidents_from)))
    feedback = ()
    if args.feedback:
        from sentinel.daemon.feedback_store import read_feedback

        feedback = read_feedback(Path(args.feedback))
    summary = train(config, args.history, Path(args.out),
                    sources=label_sources(config, args.incidents, feedback))
    print(json_text(summary))  # strict JSON: a figure that cannot be computed is null
    return 0


def _instant(text: str) -> float:
    from sentinel.config.load import parse_instant as read

    return read(float(text) if text.replace(".", "", 1).isdigit() else text, "--incidents-from")


def _backtest(args: argparse.Namespace) -> int:
    from sentinel.config.load import load_config
    from sentinel.training.backtest import backtest, json_text

    report = backtest(load_config(args.config), Path(args.model), args.data, Path(args.alerts),
                      Path(args.scores), args.report and Path(args.report),
                      args.plot and Path(args.plot))
    data = report["data"]
    rejected = ", ".join(f"{reason} {count}" for reason, count in sorted(data["rejected"].items()))
    print(f"backtest: {data['samples']} samples replayed, {data['late']} late (not scored), "
          f"{sum(data['rejected'].values())} lines rejected" + (f" ({rejected})" if rejected else ""),
          file=sys.stderr)
    print(json_text({"model": report["model"]["overall"],
                     "baseline": report["baseline"]["overall"]}))
    return 0


def _run(args: argparse.Namespace) -> int:
    import prometheus_client

    from sentinel.config.load import load_config
    from sentinel.runner import App

    prometheus_client.disable_created_metrics()  # one *_created series per counter is noise

    # kafka-python logs every failed reconnect attempt as an ERROR; the daemon reports broker
    # outages itself, once a minute, and readiness shows them
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    logging.getLogger("kafka").setLevel(logging.WARNING if debug else logging.CRITICAL)
    app = App.create(load_config(args.config))
    app.install_signal_handlers()
    return app.run()


def _ingest(args: argparse.Namespace) -> int:
    import signal

    import prometheus_client

    from sentinel.config.load import load_config
    from sentinel.ingest.bridge import Bridge

    prometheus_client.disable_created_metrics()
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    logging.getLogger("kafka").setLevel(logging.WARNING if debug else logging.CRITICAL)
    bridge = Bridge.create(load_config(args.config))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: bridge.stop())
    return bridge.run()


def _backfill(args: argparse.Namespace) -> int:
    from sentinel.config.load import load_config
    from sentinel.ingest.backfill import ALERTS_QUERY, backfill, backfill_incidents

    if args.out is None and args.incidents_out is None:
        raise SentinelError("give --out DIR (samples), --incidents-out FILE (incidents), or both")
    config = load_config(args.config)
    if args.incidents_out is not None:
        summary = backfill_incidents(config, args.prometheus, args.start, args.end,
                                     Path(args.incidents_out), args.alerts_query or ALERTS_QUERY,
                                     chunk=args.chunk)
        print(json.dumps(summary))
    if args.out is not None:
        summary = backfill(config, args.prometheus, args.start, args.end, Path(args.out),
                           chunk=args.chunk)
        print(json.dumps(summary))
    return 0


def _models(args: argparse.Namespace) -> int:
    """`sentinel models list|promote|rollback`: the registry under model.path."""
    from sentinel.config.load import load_config
    from sentinel.retrain.registry import ModelRegistry

    config = load_config(args.config)
    registry = ModelRegistry(config.model.path, config.model.keep_versions)
    if args.action == "list":
        versions = registry.versions()
        if args.json:
            print(json.dumps([{"version": v.version, "current": v.current, "path": str(v.path),
                               **_version_facts(v.metadata)} for v in versions]))
            return 0
        if not versions:
            print(f"no model versions in {registry.root}")
        for v in versions:
            facts = _version_facts(v.metadata)
            verdict = {True: "better", False: "NOT better", None: "not compared"}[facts["better"]]
            print(f"{'*' if v.current else ' '} {v.version}  trained on "
                  f"{facts['first_ts']}..{facts['last_ts']}  validation pr_auc "
                  f"{facts['pr_auc']} early_recall {facts['early_recall']}  static baseline "
                  f"early_recall {facts['baseline_early_recall']} ({verdict})  labels "
                  f"{facts['labels']}  feedback used {_feedback_words(facts['feedback'])}")
        return 0
    if args.action == "promote":
        source = Path(args.version)
        version = args.version
        if "/" in args.version or (source.is_dir() and (source / "metadata.json").is_file()):
            version = registry.add(source, copy=True)  # a model directory: imported first
        doc = registry.promote(version, config)
    else:
        doc = registry.rollback(config)
    print(json.dumps({"current": doc["version"], "previous": doc["previous"][:1]}))
    return 0


def _calendar(args: argparse.Namespace) -> int:
    """`sentinel calendar list|add|remove`: the planned events of calendar.file / calendar.topic."""
    from sentinel.atomic import write_atomic
    from sentinel.config.calendar_file import (
        calendar_text,
        event_document,
        parse_event,
        read_calendar,
    )
    from sentinel.config.load import load_config
    from sentinel.daemon.calendar_source import publish, read_topic
    from sentinel.daemon.kafka_io import client_security

    config = load_config(args.config)
    cfg = config.calendar
    if cfg.file is None and cfg.topic is None:
        raise SentinelError(f"{args.config} sets neither calendar.file nor calendar.topic")
    security = client_security(config.kafka) if cfg.topic else None
    path = Path(cfg.file) if cfg.file else None
    file_events = list(read_calendar(path)) if path is not None and path.exists() else []
    if args.action == "list":
        merged = {e.name: e for e in file_events}
        if cfg.topic:
            merged.update(read_topic(config.kafka.bootstrap_servers, cfg.topic, security))
        events = sorted(merged.values(), key=lambda e: (e.start_ts, e.name))
        if args.json:
            print(json.dumps([event_document(e) for e in events]))
        for e in [] if args.json else events:
            doc = event_document(e)
            services = doc["services"] if doc["services"] == "all" else ",".join(doc["services"])
            print(f"{e.name}  {doc['start']} .. {doc['end']}  services {services}  "
                  f"x{e.multiplier:g}")
        return 0
    if args.action == "add":
        services = "all" if args.services == "all" else [
            s.strip() for s in args.services.split(",") if s.strip()]
        event = parse_event({"name": args.name, "start": _when(args.start), "end": _when(args.end),
                             "services": services, "multiplier": args.multiplier}, "event")
        file_events = [e for e in file_events if e.name != event.name] + [event]
    else:
        event = None
        if not any(e.name == args.name for e in file_events) and not cfg.topic:
            raise SentinelError(f"no event named {args.name!r} in {path}")
        file_events = [e for e in file_events if e.name != args.name]
    if path is not None:
        ordered = sorted(file_events, key=lambda e: (e.start_ts, e.name))
        write_atomic(path, calendar_text(ordered).encode())
    if cfg.topic:
        publish(config.kafka.bootstrap_servers, cfg.topic, args.name, event, security)
    print(json.dumps({"action": args.action, "name": args.name,
                      "event": event_document(event) if event else None,
                      "file": str(path) if path else None, "topic": cfg.topic}))
    return 0


def _when(text: str) -> float | str:
    """A CLI time: Unix seconds as a number, anything else as given (RFC 3339)."""
    try:
        return float(text)
    except ValueError:
        return text


def _feedback_words(used: object) -> str:
    if not isinstance(used, dict):
        return "none (trained before feedback existed)"
    return (f"{used.get('false_alarm', 0)} false alarm(s), {used.get('confirmed', 0)} "
            f"confirmed ({used.get('windows', 0)} windows)")


def _feedback(args: argparse.Namespace) -> int:
    """`sentinel feedback`: an operator's verdict on an alert episode, for the next training."""
    import time

    from sentinel.config.load import load_config
    from sentinel.daemon.feedback_store import make_feedback, record_feedback

    config = load_config(args.config)
    item = make_feedback(args.episode, "false_alarm" if args.false_alarm else "confirmed",
                         args.note)
    print(json.dumps(record_feedback(Path(config.state.dir), item, time.time())))
    return 0


def _version_facts(metadata: dict | None) -> dict[str, object]:
    if metadata is None:
        return {"first_ts": None, "last_ts": None, "pr_auc": None, "early_recall": None,
                "baseline_early_recall": None, "better": None, "feedback": None, "labels": None,
                "error": "metadata.json unreadable"}
    training = metadata.get("training", {})
    overall = metadata.get("validation", {}).get("overall", {})
    skill = metadata.get("skill") or {}
    return {"first_ts": training.get("first_ts"), "last_ts": training.get("last_ts"),
            "pr_auc": overall.get("pr_auc"), "early_recall": overall.get("early_recall"),
            "baseline_early_recall": skill.get("baseline_early_recall"),
            "better": skill.get("better"), "feedback": training.get("feedback"),
            "labels": (training.get("labels") or {}).get("mode", "rule")}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentinel", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=os.environ.get("SENTINEL_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate a config and explain errors")
    p.add_argument("config")
    p.add_argument("--dump", action="store_true",
                   help="print the effective config as YAML (secrets are never in it)")
    p.set_defaults(handler=_check_config)

    p = sub.add_parser("simulate", help="deterministic flash-sale traffic with failures")
    p.add_argument("--services", type=int, default=6,
                   help="number of simulated services (default: %(default)s)")
    p.add_argument("--days", type=float, default=1.0,
                   help="simulated days of 10-second samples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1,
                   help="random seed: the same seed gives the same traffic (default: %(default)s)")
    p.add_argument("--start", type=int, default=None, help="first event time, Unix seconds")
    p.add_argument("--out", help="write JSONL here")
    p.add_argument("--kafka", help="produce to this broker (HOST:PORT) instead")
    p.add_argument("--topic", help="topic to produce to with --kafka")
    p.add_argument("--topology-out", metavar="FILE",
                   help="also write the services' dependencies (caller: [dependencies]) here, "
                        "for the config's topology_file (.json: JSON, else YAML)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="with --kafka: event-time seconds per wall second (0 = no pacing)")
    p.add_argument("--config", help="with --kafka: take kafka.security_protocol, ssl and sasl "
                                    "from this config (TLS/SASL brokers)")
    p.add_argument("--calendar-out", help="write the sale calendar (calendar.file format) of the "
                                          "announced sales here; about a quarter of the sales "
                                          "are unannounced promotions, left out of it")
    p.set_defaults(handler=_simulate)

    p = sub.add_parser("train", help="train a model on JSONL history; prints a JSON summary last")
    p.add_argument("--config", required=True, help="the config (YAML) to train for")
    p.add_argument("--history", required=True, nargs="+", help="JSONL files or directories")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--incidents", help="incident history (CSV or JSONL of service, start, end"
                                       "[, cause]) labelling failures; default: training.incidents")
    p.add_argument("--labels", choices=["rule", "incidents", "both"],
                   help="failure events from the failure rule, the incidents or both "
                        "(default: training.labels, itself 'rule')")
    p.add_argument("--incidents-from", help="the incident history is complete from this time "
                                            "(Unix seconds or RFC 3339; default: training.incidents_from)")
    p.add_argument("--feedback", help="operator feedback file (<state.dir>/feedback.jsonl, "
                                      "written by `sentinel feedback`) to train with")
    p.set_defaults(handler=_train)

    p = sub.add_parser("backtest", help="replay data through the daemon's code path and grade it")
    p.add_argument("--config", required=True, help="the config (YAML) the daemon would run with")
    p.add_argument("--model", required=True, help="a model directory written by `sentinel train`")
    p.add_argument("--data", required=True, nargs="+",
                   help="JSONL files or directories of samples to replay")
    p.add_argument("--alerts", required=True, help="alert transitions out (JSONL)")
    p.add_argument("--scores", required=True, help="risk per scored window out (CSV)")
    p.add_argument("--report", help="figures out (JSON)")
    p.add_argument("--plot", help="plot out (PNG)")
    p.set_defaults(handler=_backtest)

    p = sub.add_parser("run", help="the daemon: consume samples from Kafka, score, alert "
                                   "(exit 0 after SIGTERM/SIGINT, 1 on an unexpected error, "
                                   "2 on a bad config or model)")
    p.add_argument("--config", required=True, help="the daemon's config (YAML)")
    p.set_defaults(handler=_run)

    p = sub.add_parser("ingest", help="bridge: read input.topic in input.format, produce Sentinel "
                                      "samples keyed by service to kafka.topic (exit 0 after "
                                      "SIGTERM/SIGINT, 1 on an unexpected error, 2 on a bad config)")
    p.add_argument("--config", required=True)
    p.set_defaults(handler=_ingest)

    p = sub.add_parser("backfill", help="history from Prometheus query_range as JSONL for "
                                        "`sentinel train`; prints a JSON summary last")
    p.add_argument("--config", required=True)
    p.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--start", required=True, help="RFC 3339 or Unix seconds")
    p.add_argument("--end", required=True, help="RFC 3339, Unix seconds or 'now'")
    p.add_argument("--out", help="directory: one JSONL file per chunk")
    p.add_argument("--incidents-out", help="also (or only) an incident history for `train "
                                           "--incidents`: CSV from the ALERTS series")
    p.add_argument("--alerts-query", help='the ALERTS selector for --incidents-out (default: '
                                          'ALERTS{alertstate="firing"})')
    p.add_argument("--chunk", default="6h", help="time range per query_range request (default 6h)")
    p.set_defaults(handler=_backfill)

    p = sub.add_parser("feedback", help="mark an alert episode a false alarm or confirm it; "
                                        "the next training (and retraining) learns from it")
    p.add_argument("--config", required=True, help="the daemon's config: the verdict goes to "
                                                  "<state.dir>/feedback.jsonl")
    p.add_argument("--episode", required=True,
                   help="<service>@<startsAt>: the alert's service label and startsAt (RFC 3339 "
                        "or Unix seconds), as in its `episode` annotation")
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--false-alarm", action="store_true", help="no failure followed")
    verdict.add_argument("--confirmed", action="store_true", help="a real problem followed")
    p.add_argument("--note", default="", help="free text kept with the verdict")
    p.set_defaults(handler=_feedback)

    p = sub.add_parser("calendar", help="the sale calendar (calendar.file, calendar.topic): list, "
                                        "add or remove planned events")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("list", help="the planned events, by start (file and topic merged)")
    q.add_argument("--json", action="store_true", help="one JSON array instead of lines")
    q = actions.add_parser("add", help="add (or replace) an event by name")
    q.add_argument("--name", required=True)
    q.add_argument("--start", required=True, help="RFC 3339 with a zone, or Unix seconds")
    q.add_argument("--end", required=True, help="RFC 3339 with a zone, or Unix seconds")
    q.add_argument("--services", default="all", help="comma-separated services, or all (default)")
    q.add_argument("--multiplier", type=float, default=1.0,
                   help="expected traffic, times the usual (default 1)")
    q = actions.add_parser("remove", help="remove an event by name")
    q.add_argument("--name", required=True)
    for q in actions.choices.values():
        q.add_argument("--config", required=True, help="the config naming calendar.file / .topic")
    p.set_defaults(handler=_calendar)

    p = sub.add_parser("models", help="the model registry under model.path: list versions, "
                                      "promote one, roll back (a running daemon swaps it in)")
    models = p.add_subparsers(dest="action", required=True)
    q = models.add_parser("list", help="versions, oldest first; * marks the current one")
    q.add_argument("--json", action="store_true", help="one JSON array instead of lines")
    q = models.add_parser("promote", help="verify VERSION and make it current (a model "
                                          "directory path is imported as a version first)")
    q.add_argument("version")
    models.add_parser("rollback", help="make the previously current version current again")
    for q in models.choices.values():
        q.add_argument("--config", required=True, help="the config whose model.path holds the registry")
    p.set_defaults(handler=_models)
    return parser
