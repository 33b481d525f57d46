"""Training: history -> labelled windows -> two-layer LSTM -> validated artifact.

The validation split is by time: the last part of the history (see `validation_cut`),
with one horizon left out before it so no target looks across the cut. The scaler
and the static-threshold baseline are fitted on the training part only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.config.load import effective_topology
from sentinel.config.schema import AlertingConfig, Config
from sentinel.core.context import ContextLayout, ContextProvider, with_context
from sentinel.core.features import Scaler, tracked_metrics
from sentinel.core.incidents import Feedback, LabelSources, feedback_span
from sentinel.errors import DataError
from sentinel.model.artifact import save_model, schema_of
from sentinel.training.baseline import tune_baseline
from sentinel.training.dataset import WindowSet, labelled_windows, offline_context
from sentinel.training.evaluate import Coverage, average_precision, evaluate, replay_alerts
from sentinel.training.history import Labelled, label, read_series
from sentinel.training.incidents import read_incidents
from sentinel.training.keras_model import Scorer, build_model
from sentinel.training.topology import SeriesTopology

log = logging.getLogger(__name__)


MIN_VALIDATION_FAILURES = 3
FEEDBACK_REPEAT = 5  # each window an operator's verdict relabelled is trained on this often
CHANCE_MARGIN = 1.5  # a PR-AUC below this times the positive share ranks like chance
SCALER_WINDOWS = 20_000  # windows sampled to decide transforms and fit the scaling


def validation_cut(config: Config, labelled: list[Labelled], first: int, last: int) -> float:
    """Where the validation part starts: the last `validation_fraction` of the time range,
    moved earlier if needed so that it holds at least that fraction of the failure events
    (and never fewer than MIN_VALIDATION_FAILURES while training keeps as many): a
    validation day without failures cannot choose an alert threshold."""
    fraction = config.training.validation_fraction
    cut = first + (1 - fraction) * (last - first)
    starts = sorted(e.start_ts for item in labelled for e in item.events)
    wanted = max(MIN_VALIDATION_FAILURES, math.ceil(fraction * len(starts)))
    if len(starts) >= 2 * wanted:
        cut = min(cut, starts[-wanted] - config.horizon_seconds - config.window_seconds)
    return cut


def label_sources(config: Config, incidents: str | Path | None = None,
                  feedback: Sequence[Feedback] = ()) -> LabelSources:
    """What labels training: `training.labels`, the incidents file (`incidents`, else
    `training.incidents`) and operator feedback."""
    cfg = config.training
    path = incidents if incidents is not None else cfg.incidents
    if cfg.labels == "rule" and path is not None:
        raise DataError(f"an incidents file ({path}) is given but training.labels is 'rule': "
                        "set training.labels to 'incidents' or 'both' (or --labels)")
    if cfg.labels != "rule" and path is None:
        raise DataError(f"training.labels is {cfg.labels!r} but no incidents file is given: set "
                        "training.incidents or pass --incidents FILE")
    return LabelSources(cfg.labels, read_incidents(path) if path is not None else (),
                        cfg.incidents_from, tuple(feedback))


def train(config: Config, history: Iterable[str | Path], out: Path,
          until_ts: float | None = None, no_skill: bool = False,
          sources: LabelSources | None = None) -> dict[str, Any]:
    """Train, validate and save a model; returns the JSON summary.

    `until_ts`: train on the samples before it only (the retrainer keeps a holdout after it).
    `sources`: incidents and feedback besides the rule (default: `label_sources(config)`).
    `no_skill` zeroes every weight after training: a deliberately bad model (risk 0.5 for
    every window), for tests of the retraining gate; never set it otherwise."""
    import keras

    started = time.monotonic()
    cfg = config.training
    sources = sources if sources is not None else label_sources(config)
    series, stats = read_series(list(history), config, until_ts)
    labelled = [label(s, config, sources) for s in series.values()]
    windows = labelled_windows(labelled, config)
    if not windows.known.any():
        raise DataError("no window of the history has its failure state known: the metrics of "
                        "the `failure` rule are never present; check the rule's metric names")
    first, last = int(windows.ts.min()), int(windows.ts.max())
    cut = validation_cut(config, labelled, int(windows.ts[windows.known].min()), last)
    train_rows = np.flatnonzero((windows.ts < cut - config.horizon_seconds) & ~np.isnan(windows.y)
                                & windows.known)
    val_rows = np.flatnonzero((windows.ts >= cut) & windows.known)
    positives = train_rows[windows.y[train_rows] == 1]
    if len(positives) == 0:
        raise DataError("the training part of the history holds no failure to learn from; "
                        "record more history or check the `failure` rule")
    negatives = train_rows[windows.y[train_rows] == 0]
    # Thin the easy negatives, keep every hard one: the windows just before a failure's
    # horizon look like its precursors and teach the model *when*, not just *whether*.
    hard = near_failures(windows, negatives, config.horizon_seconds, 3 * config.horizon_seconds)
    judged = (windows.judged if windows.judged is not None
              else np.zeros(len(windows.ts), dtype=bool))
    hard |= judged[negatives]  # a false alarm's windows: the hardest negatives there are
    negatives = np.union1d(negatives[hard], negatives[~hard][:: cfg.negative_stride])
    fit_rows = cap_windows(np.sort(np.concatenate([positives, negatives])), positives,
                           cfg.max_windows)
    # An operator's verdict is rare and certain: its windows weigh FEEDBACK_REPEAT times
    feedback_rows = fit_rows[judged[fit_rows]]
    fit_rows = np.sort(np.concatenate([fit_rows, np.repeat(feedback_rows, FEEDBACK_REPEAT - 1)]))
    log.info("training on %d windows (%d failure precursors), validating on %d",
             len(fit_rows), len(positives), len(val_rows))

    # The scaling sees every window before the validation part, labelled or not.
    before_cut = np.flatnonzero(windows.ts < cut - config.horizon_seconds)
    sample = before_cut[:: max(1, len(before_cut) // SCALER_WINDOWS)]
    scaler = Scaler.fit_raw(windows.raw(config, sample), config.features)
    providers = training_context(config, windows, scaler)
    layout = ContextLayout.of({name: p.channels() for name, p in providers.items()})

    def model_input(rows: np.ndarray) -> np.ndarray:
        prepared = scaler.prepare(windows.raw(config, rows), config.features)
        return with_context(prepared, layout.build(windows.batch(config, rows), providers))

    x_fit = model_input(fit_rows)
    y_fit = windows.y[fit_rows].astype(np.float32)
    x_val = model_input(val_rows)
    y_val = windows.y[val_rows]
    labelled_val = ~np.isnan(y_val)  # windows inside a failure: scored, never a target

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(config.window_steps, scaler.inputs + layout.width, cfg.lstm_units,
                        cfg.dropout)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(curve="PR", name="pr_auc")])
    # Class imbalance: the negatives are thinned by the stride, and positives weigh the square
    # root of the remaining imbalance. Full balancing pushes every window that merely looks
    # like the run-up to a failure (a sale's early traffic ten minutes out) to risk ~1, and
    # the alert then fires before the horizon; the square root keeps the risk graded.
    weight = {0: 1.0, 1: float(np.sqrt(len(negatives) / len(positives)))}
    history_cb = model.fit(
        x_fit, y_fit, batch_size=cfg.batch_size, epochs=cfg.epochs, class_weight=weight,
        validation_data=(x_val[labelled_val], y_val[labelled_val].astype(np.float32))
        if labelled_val.any() else None,
        callbacks=[keras.callbacks.EarlyStopping(
            monitor="val_loss" if labelled_val.any() else "loss", patience=cfg.patience,
            restore_best_weights=True)],
        shuffle=True, verbose=2)

    if no_skill:
        model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    scorer = Scorer(model, scaler, config, layout)
    val_risk = scorer.score_prepared(x_val)
    operating_threshold, validation = choose_threshold(config, windows, val_rows, val_risk)
    baseline = tune_baseline(config, windows, np.flatnonzero(
        (windows.ts < cut - config.horizon_seconds) & windows.known), val_rows)
    skill = compare_with_baseline(validation["overall"], baseline.get("validation", {}),
                                  float(np.nanmean(y_val)) if labelled_val.any() else None)
    if skill["better"] is False:
        log.warning("the model is NOT better than the static baseline on the validation part "
                    "(%s): expect it to warn no better than a static threshold", skill["reason"])
    elif skill["better"] is None:
        log.warning("cannot compare the model with the static baseline: %s", skill["reason"])
    metadata = {
        **schema_of(config),
        "metrics": list(tracked_metrics(config)),
        "lstm_units": list(cfg.lstm_units),
        **(layout.to_metadata() if layout.providers else {}),
        "training": {"first_ts": first, "last_ts": last, "validation_from_ts": int(cut),
                     "windows": len(fit_rows), "positives": len(positives),
                     "epochs": len(history_cb.history["loss"]), "seed": cfg.seed,
                     "decode": stats.to_json(),
                     "labels": {"mode": sources.mode, "incidents": len(sources.incidents)},
                     "feedback": feedback_used(config, sources, windows, train_rows)},
        "operating_threshold": operating_threshold,
        "validation": validation,
        "baseline": baseline,
        "skill": skill,
    }
    version = save_model(model, scaler, metadata, out)
    return {"model_dir": str(out), "version": version,
            "seconds": round(time.monotonic() - started, 1), **metadata["training"],
            "operating_threshold": operating_threshold, "validation": validation["overall"],
            "baseline": baseline["rule"], "skill": skill}


def feedback_used(config: Config, sources: LabelSources, windows: WindowSet,
                  train_rows: np.ndarray) -> dict[str, int]:
    """Operator verdicts that relabelled at least one training window, by verdict, and the
    windows they relabelled (a verdict on an episode outside the training range counts 0)."""
    used = {"false_alarm": 0, "confirmed": 0}
    if windows.judged is None or not sources.feedback:
        return {**used, "windows": 0}
    rows = train_rows[windows.judged[train_rows]]
    services = np.array([windows.labelled[k].series.service for k in windows.series_index[rows]])
    for item in sources.feedback:
        first, last = feedback_span(item, config.horizon_seconds)
        ts = windows.ts[rows[services == item.service]] if len(rows) else np.zeros(0)
        if ((ts >= first) & (ts <= last)).any():
            used[item.verdict] += 1
    return {**used, "windows": len(rows)}


def training_context(config: Config, windows: WindowSet, scaler: Scaler
                     ) -> dict[str, ContextProvider]:
    """The context providers (`sentinel.core.context`) the model trains with, by name: the
    ones the config sets up, built on the training data itself, so that training computes
    the same channels as the pipeline does live and in a backtest."""
    providers: dict[str, ContextProvider] = dict(offline_context(config))
    topology = effective_topology(config)
    if topology:
        providers["topology"] = SeriesTopology(topology, windows.labelled, config, scaler)
    return providers


def compare_with_baseline(model: dict[str, Any], baseline: dict[str, Any],
                          positive_share: float | None = None) -> dict[str, Any]:
    """Is the model better than the static baseline on the validation part? Better means more
    failures announced early within the false-alert budget the threshold was chosen for, or
    as many with fewer false alerts; a model whose windows rank no better than chance
    (PR-AUC within CHANCE_MARGIN of the positive share) is never better. A validation part
    without failures cannot say."""
    ours, theirs = model.get("early_recall"), baseline.get("early_recall")
    ours_false = model.get("false_alerts_per_service_day") or 0.0
    theirs_false = baseline.get("false_alerts_per_service_day") or 0.0
    figures = {"model_early_recall": ours, "baseline_early_recall": theirs,
               "model_false_alerts_per_service_day": ours_false,
               "baseline_false_alerts_per_service_day": theirs_false}
    if ours is None or theirs is None:
        return {**figures, "better": None, "reason": "the validation part holds no failure"}
    better = ours > theirs or (ours == theirs and ours > 0 and ours_false < theirs_false)
    reason = (f"validation early recall {ours:.2f} at {ours_false:.2f} false alerts per "
              f"service-day, the static baseline's {theirs:.2f} at {theirs_false:.2f}")
    pr_auc = model.get("pr_auc")
    if positive_share and pr_auc is not None and pr_auc <= CHANCE_MARGIN * positive_share:
        better = False
        reason = (f"validation PR-AUC {pr_auc:.3f}: no better than chance "
                  f"({positive_share:.3f}); {reason}")
    return {**figures, "better": better, "reason": reason}


def cap_windows(rows: np.ndarray, positives: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` rows: every positive (up to half the limit), the negatives evenly thinned;
    training time grows with the windows, not with the days of history."""
    if len(rows) <= limit:
        return rows
    keep_positives = positives[np.linspace(0, len(positives) - 1, min(len(positives), limit // 2)
                                           ).astype(int)] if len(positives) else positives
    negatives = np.setdiff1d(rows, positives, assume_unique=True)
    room = min(limit - len(keep_positives), len(negatives))
    keep_negatives = negatives[np.linspace(0, len(negatives) - 1, room).astype(int)]
    return np.sort(np.concatenate([keep_positives, keep_negatives]))


def near_failures(windows: WindowSet, rows: np.ndarray, after_seconds: int, before_seconds: int
                  ) -> np.ndarray:
    """Which rows end between `before_seconds` and `after_seconds` ahead of a failure start."""
    out = np.zeros(len(rows), dtype=bool)
    for k, item in enumerate(windows.labelled):
        mine = windows.series_index[rows] == k
        for event in item.events:
            lead = event.start_ts - windows.ts[rows]
            out |= mine & (lead > after_seconds) & (lead <= before_seconds)
    return out


def choose_threshold(config: Config, windows: WindowSet, rows: np.ndarray, risk: np.ndarray
                     ) -> tuple[float, dict[str, Any]]:
    """The operating threshold for `alerting.threshold: auto`, and the validation figures.

    Among thresholds whose validation false alerts stay within the budget, the one with the
    best early recall, then the lowest: the budget is what the operator accepts, and a
    validation part holds few failures, so of equally good thresholds the most sensitive one
    warns of more unseen failures. If none is within the budget, the fewest false alerts. An
    explicit `alerting.threshold` is only evaluated, not replaced.
    """
    if config.alerting.threshold is not None:
        candidates = [config.alerting.threshold]
    else:
        candidates = sorted({round(float(t), 4) for t in np.linspace(0.05, 0.95, 19)}
                            | {round(float(t), 4) for t in np.quantile(risk, THRESHOLD_QUANTILES)
                               if 0.01 <= t <= 0.9995} if len(risk) else {0.5})
    best: tuple[tuple[float, float], float, dict[str, Any]] | None = None
    for threshold in candidates:
        report = _validate(config, windows, rows, risk, config.alerting.resolved(threshold))
        overall = report["overall"]
        false_rate = overall.get("false_alerts_per_service_day") or 0.0
        recall = overall.get("early_recall") or 0.0
        within = false_rate <= config.training.false_alerts_per_day
        key = (1.0 + recall, -threshold) if within else (0.0, -false_rate)
        if best is None or key > best[0]:
            best = (key, threshold, report)
    assert best is not None
    return best[1], best[2]


THRESHOLD_QUANTILES = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)


def _validate(config: Config, windows: WindowSet, rows: np.ndarray, risk: np.ndarray,
              alerting: AlertingConfig) -> dict[str, Any]:
    """The alert figures of the validation part, replayed per service."""
    if not len(rows):
        return {"overall": {}, "services": {}}
    transitions = []
    coverage = {}
    events = {}
    for k in np.unique(windows.series_index[rows]):
        item = windows.labelled[k]
        mine = rows[windows.series_index[rows] == k]
        ts = windows.ts[mine]
        transitions += replay_alerts(alerting, config.step_seconds, item.series.service,
                                     ts, risk[np.isin(rows, mine)])
        coverage[item.series.service] = Coverage(int(ts[0]) - config.window_seconds, int(ts[-1]))
        events[item.series.service] = [e for e in item.events if e.start_ts >= ts[0]]
    report = evaluate(config, events, transitions, coverage)
    report["overall"]["pr_auc"] = average_precision(windows.y[rows], risk)
    return report
