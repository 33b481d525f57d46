"""Scheduled retraining: train on recent history in a child process, validate, promote.

    >>> retrainer = Retrainer(config, registry, store, lambda: watcher.serving, metrics=r)
    >>> retrainer.start()       # APScheduler BackgroundScheduler: `retrain.schedule`
    >>> retrainer.run_once()    # one run, synchronously (what the scheduler calls)
    'promoted'
    >>> retrainer.stop()        # kills a training child in flight; serving is untouched

One run:

1. **Enough history?** The store must span `retrain.min_history` of event time, else the
   run is `skipped`.
2. **Train in a child** (sentinel.retrain.child) on the history older than the newest
   `retrain.holdout`, into `<model.path>/.incoming/candidate-*/model`, with
   `retrain.threads` threads and a lower CPU priority; it is killed (its whole process
   group) after `retrain.timeout`. The child also grades the candidate and the model in
   service on the holdout, which neither trained on.
3. **Gate** (sentinel.retrain.gate.decide): promote when candidate >= current - `retrain.margin`
   on `retrain.metric`. Promoting moves the candidate to `versions/<version>/` and switches
   the `current` pointer (sentinel.retrain.registry); the daemon's watcher swaps it in between two
   polls (sentinel.daemon.hotswap).
4. A crash, a timeout or a rejection deletes the candidate directory: nothing partial
   stays, and the model in service is never touched.

Every run is one log line (`"event": "retrain"`) and is counted in
`sentinel_retrain_runs_total{outcome}`: `promoted`, `rejected`, `failed` or `skipped`.

With no model at all (a cold start), a check every `COLD_START_CHECK_SECONDS` runs the job
as soon as the history spans `min_history`, instead of waiting for the schedule.

Runs never overlap (a lock, and APScheduler's max_instances=1); runs missed while the
process was busy or suspended are coalesced into one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sentinel.config.schedule import interval_seconds, trigger_for
from sentinel.config.schema import Config
from sentinel.daemon.history_store import HistoryStore
from sentinel.errors import ModelError, SentinelError
from sentinel.model.artifact import verify_artifact
from sentinel.retrain.child import THREAD_VARIABLES
from sentinel.retrain.gate import decide
from sentinel.retrain.registry import ModelRegistry, Target

log = logging.getLogger(__name__)

OUTCOMES = ("promoted", "rejected", "failed", "skipped")
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
COLD_START_CHECK_SECONDS = 60.0
COLD_START_RETRY_SECONDS = 1800.0  # after a failed first training, before the next try
MISFIRE_GRACE_SECONDS = 3600  # a run missed by up to this much (suspend, busy) still runs
LOG_TAIL_CHARS = 2000

# (config, history dir, holdout_from, out, current model or None, threads) -> argv
ChildCommand = Callable[[Config, Path, float, Path, Path | None, int], list[str]]


def child_command(config: Config, history: Path, holdout_from: float, out: Path,
                  current: Path | None, threads: int) -> list[str]:
    argv = [sys.executable, "-m", "sentinel.retrain.child", "--config", config.source,
            "--history", str(history), "--holdout-from", str(holdout_from), "--out", str(out),
            "--threads", str(threads)]
    return argv + (["--current", str(current)] if current is not None else [])


@dataclass(frozen=True)
class RunResult:
    outcome: str
    reason: str
    facts: dict[str, Any]


class Retrainer:
    def __init__(self, config: Config, registry: ModelRegistry, store: HistoryStore,
                 serving: Callable[[], Target | None], metrics: CollectorRegistry,
                 command: ChildCommand = child_command, extra_args: Sequence[str] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not Path(config.source).is_file():
            raise SentinelError(f"retrain needs the config as a file for its training child, "
                                f"got {config.source!r}")
        if registry.is_single_model:
            raise SentinelError(
                f"retrain.enabled needs model.path to be a model registry, but {registry.root} "
                f"is a single model directory: point model.path at a new directory and run "
                f"`sentinel models promote {registry.root}` to import it as the first version")
        self.config, self.registry, self.store = config, registry, store
        self.serving, self.command, self.extra_args = serving, command, list(extra_args)
        self.clock = clock
        self.scheduler: Any = None
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._cold_retry_at = 0.0
        self.last: RunResult | None = None
        r = metrics
        self.runs = Counter("sentinel_retrain_runs_total", "Retraining runs by outcome",
                            ["outcome"], registry=r)
        self.duration = Histogram("sentinel_retrain_duration_seconds",
                                  "Wall time of retraining runs that trained (child and gate)",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.samples = Gauge("sentinel_retrain_samples",
                             "History samples the last candidate was trained on", registry=r)
        self.score = Gauge("sentinel_retrain_score",
                           "Holdout score (retrain.metric) of the last run's models",
                           ["model"], registry=r)
        self.running = Gauge("sentinel_retrain_running", "1 while a training child runs",
                             registry=r)
        for outcome in OUTCOMES:
            self.runs.labels(outcome)

    # --- lifecycle (the daemon's App) ---

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        self.registry.clean_incoming()  # candidates of a run that died with the process
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per run is ours
        period = interval_seconds(self.config.retrain.schedule)
        grace = int(min(MISFIRE_GRACE_SECONDS, period or MISFIRE_GRACE_SECONDS))
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.scheduler.add_job(self.run_once, trigger_for(self.config.retrain.schedule),
                               id="retrain", name="retrain", max_instances=1, coalesce=True,
                               misfire_grace_time=max(1, grace))
        self.scheduler.add_job(self._cold_start, IntervalTrigger(
            seconds=COLD_START_CHECK_SECONDS, timezone="UTC"), id="retrain-cold-start",
            max_instances=1, coalesce=True)
        self.scheduler.start()
        log.info("retraining scheduled: %s (min_history %.0fs, holdout %.0fs, %s, margin %s)",
                 self.config.retrain.schedule, self.config.retrain.min_history_seconds,
                 self.config.retrain.holdout_seconds, self.config.retrain.metric,
                 self.config.retrain.margin)

    def stop(self) -> None:
        """Stop scheduling and kill a training child in flight; returns at once."""
        self._stopping.set()
        self._kill_child()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)

    @property
    def busy(self) -> bool:
        """A run is in flight."""
        return self._lock.locked()

    # --- one run ---

    def run_once(self) -> str:
        """One retraining run, synchronously; returns its outcome (or 'busy'). Never raises."""
        if not self._lock.acquire(blocking=False):
            return "busy"
        started = self.clock()
        try:
            result = self._run()
        except Exception as exc:  # the scheduler thread must survive anything
            log.exception("retraining run failed unexpectedly")
            result = RunResult("failed", f"unexpected error: {exc!r}", {})
        finally:
            self._lock.release()
        seconds = self.clock() - started
        self.runs.labels(result.outcome).inc()
        if result.outcome != "skipped":
            self.duration.observe(seconds)
        self.last = result
        level = logging.INFO if result.outcome in ("promoted", "rejected", "skipped") else \
            logging.ERROR
        log.log(level, "retrain %s in %.1fs: %s", result.outcome, seconds, result.reason,
                extra={"fields": {"event": "retrain", "outcome": result.outcome,
                                  "reason": result.reason, "seconds": round(seconds, 1),
                                  **result.facts}})
        return result.outcome

    def _cold_start(self) -> None:
        if self.serving() is not None or self.clock() < self._cold_retry_at:
            return
        span = self.store.span()
        if span is None or span[1] - span[0] < self.config.retrain.min_history_seconds:
            return
        log.info("no model in service and enough history: training the first one")
        if self.run_once() not in ("promoted", "busy"):
            self._cold_retry_at = self.clock() + COLD_START_RETRY_SECONDS

    def _run(self) -> RunResult:
        cfg = self.config.retrain
        span = self.store.span()
        if span is None or span[1] - span[0] < cfg.min_history_seconds:
            have = 0 if span is None else span[1] - span[0]
            return RunResult("skipped", f"history spans {have:.0f}s of the "
                                        f"{cfg.min_history_seconds:.0f}s min_history", {})
        holdout_from = span[1] - cfg.holdout_seconds
        serving = self.serving()
        job = self.registry.staging_dir("candidate")
        out = job / "model"
        facts: dict[str, Any] = {"holdout_from_ts": holdout_from, "history_first_ts": span[0],
                                 "history_last_ts": span[1],
                                 "current_version": serving.version if serving else None}
        try:
            argv = self.command(self.config, self.store.directory, holdout_from, out,
                                serving.path if serving else None, cfg.threads)
            rc, stdout, stderr = self._child_run(argv + self.extra_args, job)
            summary = _last_json_line(stdout)
            if summary and summary.get("corrupt"):
                self.store.quarantine(sorted({name for name, _, _ in summary["corrupt"]}))
            if rc is None:
                return RunResult("failed", f"training exceeded retrain.timeout "
                                           f"({cfg.timeout_seconds:.0f}s): killed", facts)
            if self._stopping.is_set():
                return RunResult("failed", "stopped with the daemon", facts)
            if rc != 0 or summary is None or "candidate" not in summary:
                detail = (summary or {}).get("error") or stderr[-LOG_TAIL_CHARS:].strip()
                return RunResult("failed", f"training child exited {rc}: {detail}", facts)
            verify_artifact(out, self.config)  # what the child wrote is complete and matches
            facts.update(samples=summary["training"]["decode"]["samples"],
                         candidate_version=summary["training"]["version"],
                         candidate=summary["candidate"], current=summary["current"])
            self.samples.set(facts["samples"])
            decision = decide(cfg.metric, summary["candidate"], summary["current"], cfg.margin)
            for model, score in (("candidate", decision.candidate), ("current", decision.current)):
                self.score.labels(model).set(float("nan") if score is None else score)
            skill = summary["training"].get("skill") or {}
            if skill.get("better") is False:
                return RunResult("rejected", "the candidate is not better than the static "
                                 f"baseline: {skill['reason']}", facts)
            if decision.outcome == "rejected":
                return RunResult("rejected", decision.reason, facts)
            version = self.registry.add(out)
            self.registry.promote(version, self.config)
            return RunResult("promoted", decision.reason, facts)
        except ModelError as exc:
            return RunResult("failed", str(exc), facts)
        finally:
            shutil.rmtree(job, ignore_errors=True)

    def _child_run(self, argv: list[str], job: Path) -> tuple[int | None, str, str]:
        """(exit code or None after a timeout kill, stdout, stderr) of the training child."""
        threads = str(self.config.retrain.threads)
        env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, threads),
               "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        stdout_path, stderr_path = job / "stdout.log", job / "stderr.log"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            # its own session: a timeout kills the child and anything it started
            self._child = subprocess.Popen(argv, stdout=stdout, stderr=stderr,
                                           stdin=subprocess.DEVNULL, env=env,
                                           start_new_session=True)
        self.running.set(1)
        try:
            if self._stopping.is_set():
                self._kill_child()
            rc: int | None = self._child.wait(self.config.retrain.timeout_seconds)
        except subprocess.TimeoutExpired:
            self._kill_child()
            rc = None
        finally:
            self.running.set(0)
            self._child = None
        return (rc, stdout_path.read_text(errors="replace"),
                stderr_path.read_text(errors="replace"))

    def _kill_child(self) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
    return None
