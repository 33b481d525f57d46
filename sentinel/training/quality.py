"""Quality figures of a backtest: the model against the operator's best static threshold.

    >>> train = labelled_series(["train.jsonl"], config)
    >>> test = labelled_series(["test.jsonl"], config)
    >>> report = assess(config, train, test, read_scores("s.csv"), read_alerts("a.jsonl"))
    >>> report["at_equal_false_alerts"]["1.0"]      # {"model": 0.4, "static": 0.25}

Definitions (the independent evaluator's, so that our figures read like theirs):

- An *event* is an onset of the failure rule held for `for` (sentinel.core.labels; an onset within
  one horizon after the previous failure ended is the same event). It is *counted* when the
  labelled data covers one window plus one horizon before it (as sentinel.training.evaluate does) and,
  with `report_from_ts`, when it starts at or after that time.
- *Early*: a firing in [start - horizon, start); the lead is start minus the first of them.
  *Detected*: a firing in [start - horizon, start + step], or an alert still firing at
  start + step. A firing is *false* when it lies in no [start - horizon, end] of its
  service's events. Rates are per service-day of labelled data (where the failure rule's
  metrics were observed: unlabelled history grades nothing).
- The *strong static baseline*: one feature, raw or as a per-service robust z-score
  ((x - median) / (1.4826 MAD), fitted on the training data), `>=` or `<=` a threshold taken
  from the training quantiles, firing after the condition held for ceil(30 s / step) steps
  and resolving as soon as it stops holding. Tuned on the training data only: the most
  early recall at <= 1 false alert per service-day, then the fewest false alerts.
- An *operating curve* sweeps a detector's threshold: (false alerts per service-day, early
  recall, detect recall) per threshold. The model's replays its scores through sentinel's
  alert machine with the config's alert settings; the static one sweeps the chosen rule's
  threshold. Comparisons at equal false alerts read the best early recall off each curve.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sentinel.config.schema import Config
from sentinel.core.alerts import AlertTransition
from sentinel.core.features import tracked_metrics
from sentinel.core.incidents import LabelSources
from sentinel.core.labels import FailureEvent
from sentinel.core.topology import Topology
from sentinel.training.evaluate import average_precision, replay_alerts
from sentinel.training.history import Labelled, label, read_series

STATIC_FOR_SECONDS = 30
STATIC_BUDGET = 1.0  # false alerts per service-day the static rule is tuned within
BUDGETS = (0.5, 1.0)
STATIC_QUANTILES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
                    0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
MAD_TO_SIGMA = 1.4826
Transform = Literal["raw", "robust_z"]
Direction = Literal[">=", "<="]
Scores = Mapping[str, tuple[np.ndarray, np.ndarray]]  # service -> (ts, risk), in ts order


@dataclass(frozen=True)
class Episodes:
    """One detector's alerts on one service: when each fired and resolved (inf: never)."""

    fire_ts: np.ndarray
    resolve_ts: np.ndarray


NO_EPISODES = Episodes(np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class Truth:
    """One service's events and the span its labels cover (first_ts .. last_ts)."""

    events: list[FailureEvent]
    first_ts: int
    last_ts: int
    # only these events' start_ts are counted (one kind of failure: `by_cause`); every event
    # still excuses the firings before it
    counted_only: frozenset[int] | None = None


@dataclass(frozen=True)
class Figures:
    failures: int
    detected_early: int
    detected: int
    early_recall: float | None
    detect_recall: float | None
    median_lead_seconds: float | None
    p25_lead_seconds: float | None
    firings: int
    false_alerts: int
    service_days: float
    false_alerts_per_service_day: float | None
    pr_auc: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    false_alerts_per_service_day: float
    early_recall: float
    detect_recall: float


@dataclass(frozen=True)
class StaticRule:
    metric: str
    transform: Transform
    direction: Direction
    threshold: float


@dataclass(frozen=True)
class RobustScale:
    """Per-service median and 1.4826 MAD of each tracked metric, from training data; a
    service the training data lacks gets the pooled figures."""

    median: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    pooled_median: np.ndarray
    pooled_scale: np.ndarray

    @staticmethod
    def fit(series: Mapping[str, Labelled]) -> RobustScale:
        def robust(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # all-NaN columns (a metric a service never reports) warn in nanmedian: expected
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                median = np.nanmedian(values, axis=0)
                scale = MAD_TO_SIGMA * np.nanmedian(np.abs(values - median), axis=0)
                # a metric that is mostly constant has MAD 0: its spread is the next guess
                scale = np.where(scale > 0, scale, np.nanstd(values, axis=0))
            return np.nan_to_num(median), np.where(np.nan_to_num(scale) > 0, scale, 1.0)

        per = {s: robust(item.series.values) for s, item in series.items()}
        pooled = robust(np.concatenate([item.series.values for item in series.values()]))
        return RobustScale({s: m for s, (m, _) in per.items()}, {s: k for s, (_, k) in per.items()},
                           *pooled)

    def apply(self, service: str, values: np.ndarray) -> np.ndarray:
        median = self.median.get(service, self.pooled_median)
        return (values - median) / self.scale.get(service, self.pooled_scale)


def labelled_series(paths: Iterable[str | Path], config: Config,
                    sources: LabelSources | None = None) -> dict[str, Labelled]:
    """Every service's series with its events, as `sentinel train` reads and labels them
    (with `sources`: from incidents too, as `training.labels` says)."""
    series, _ = read_series(list(paths), config)
    return {s: label(x, config, sources) for s, x in series.items()}


def truth_of(config: Config, item: Labelled, report_from_ts: int | None = None) -> Truth | None:
    """The service's events and labelled span: where any failure-rule metric was observed (or,
    where none is, from the first step an incident history labels), from `report_from_ts`
    less one window and one horizon on; None when nothing is labelled."""
    metrics = tracked_metrics(config)
    columns = [metrics.index(c.metric) for c in config.failure.conditions]
    known = np.flatnonzero((~np.isnan(item.series.values[:, columns])).any(axis=1))
    if not len(known):  # labelled by incidents alone (training.labels: incidents)
        known = np.arange(item.labelled_from, len(item.series.values))
    if not len(known):
        return None
    ts = item.series.ts
    first, last = int(ts[known[0]]), int(ts[known[-1]])
    if report_from_ts is not None:
        first = max(first, report_from_ts - config.window_seconds - config.horizon_seconds)
        if first > last:
            return None
    return Truth(item.events, first, last)


def truths_of(config: Config, series: Mapping[str, Labelled], report_from_ts: int | None = None
              ) -> dict[str, Truth]:
    out = {s: truth_of(config, item, report_from_ts) for s, item in sorted(series.items())}
    return {s: t for s, t in out.items() if t is not None}


def counted(config: Config, truth: Truth) -> list[FailureEvent]:
    return [e for e in truth.events
            if e.start_ts - config.horizon_seconds >= truth.first_ts + config.window_seconds
            and e.start_ts <= truth.last_ts
            and (truth.counted_only is None or e.start_ts in truth.counted_only)]


def cascade_starts(config: Config, truths: Mapping[str, Truth], topology: Topology
                   ) -> dict[str, frozenset[int]]:
    """Per service, the start of each event that is a *cascade*: one of its dependencies (in
    `topology`) had an event start within one horizon before it, [start - horizon, start].
    Every other event *starts in the service itself*. Derived from the labels alone, so it
    reads the same on any data set with a topology."""
    out = {}
    for service, truth in truths.items():
        deps = [truths[d] for d in topology.dependencies(service) if d in truths]
        dep_starts = np.array([e.start_ts for t in deps for e in t.events], dtype=float)
        out[service] = frozenset(
            e.start_ts for e in truth.events
            if ((dep_starts >= e.start_ts - config.horizon_seconds)
                & (dep_starts <= e.start_ts)).any())
    return out


def by_cause(config: Config, truths: Mapping[str, Truth], topology: Topology
             ) -> dict[str, dict[str, Truth]]:
    """The truths twice: counting only cascades, and only failures starting in the service."""
    cascades = cascade_starts(config, truths, topology)
    return {
        "cascade": {s: replace(t, counted_only=cascades[s]) for s, t in truths.items()},
        "own": {s: replace(t, counted_only=frozenset(e.start_ts for e in t.events) - cascades[s])
                for s, t in truths.items()},
    }


def episodes_from_transitions(transitions: Iterable[AlertTransition]) -> dict[str, Episodes]:
    spans: dict[str, list[list[float]]] = {}
    for t in sorted(transitions, key=lambda t: t.ts):
        mine = spans.setdefault(t.service, [])
        if t.state == "firing":
            mine.append([t.ts, math.inf])
        elif mine and mine[-1][1] == math.inf:
            mine[-1][1] = t.ts
    return {s: Episodes(np.array([f for f, _ in v], dtype=float), np.array([r for _, r in v]))
            for s, v in spans.items()}


def grade(config: Config, truths: Mapping[str, Truth], episodes: Mapping[str, Episodes],
          pr_auc: float | None = None) -> Figures:
    """The alert figures of one detector (firings outside a service's labelled span are not
    graded)."""
    horizon, step = config.horizon_seconds, config.step_seconds
    failures = early = detected = firings = false = 0
    leads: list[float] = []
    days = 0.0
    for service, truth in truths.items():
        ep = episodes.get(service, NO_EPISODES)
        inside = (ep.fire_ts >= truth.first_ts) & (ep.fire_ts <= truth.last_ts)
        fire, resolve = ep.fire_ts[inside], ep.resolve_ts[inside]
        for event in counted(config, truth):
            failures += 1
            s = event.start_ts
            early_fires = fire[(fire >= s - horizon) & (fire < s)]
            if len(early_fires):
                early += 1
                leads.append(float(s - early_fires.min()))
            in_window = (fire >= s - horizon) & (fire <= s + step)
            still = (fire <= s + step) & (resolve > s + step)
            detected += bool((in_window | still).any())
        starts = np.array([e.start_ts - horizon for e in truth.events], dtype=float)
        ends = np.array([e.end_ts for e in truth.events], dtype=float)
        excused = ((fire[:, None] >= starts[None, :]) & (fire[:, None] <= ends[None, :])).any(axis=1)
        firings += len(fire)
        false += int((~excused).sum())
        days += (truth.last_ts - truth.first_ts) / 86400.0
    return Figures(failures, early, detected, _ratio(early, failures), _ratio(detected, failures),
                   _pct(leads, 50), _pct(leads, 25), firings, false, round(days, 3),
                   _ratio(false, days), None if pr_auc is None else round(pr_auc, 4))


def model_pr_auc(config: Config, series: Mapping[str, Labelled], truths: Mapping[str, Truth],
                 scores: Scores) -> float | None:
    """Average precision of the risk against the window targets inside the labelled spans."""
    ys, risks = [], []
    for service, truth in truths.items():
        if service not in scores:
            continue
        ts, risk = scores[service]
        item = series[service]
        index = np.asarray(item.series.index(ts))
        keep = (ts >= truth.first_ts) & (ts <= truth.last_ts) & (index >= 0) & (index < len(item.y))
        ys.append(item.y[index[keep].astype(int)])
        risks.append(risk[keep])
    if not ys:
        return None
    return average_precision(np.concatenate(ys), np.concatenate(risks))


def risk_thresholds(risk: np.ndarray, operating: float | None = None) -> list[float]:
    """Thresholds to sweep: ~40 upper quantiles of the risk, a linspace, the operating one, and
    one above every risk (the curve's no-alert end)."""
    finite = risk[np.isfinite(risk)]
    quantiles = np.quantile(finite, 1 - np.geomspace(0.5, 1e-4, 40)) if len(finite) else []
    grid = {round(float(t), 6) for t in (*quantiles, *np.linspace(0.05, 0.95, 19))}
    if operating is not None:
        grid.add(float(operating))
    grid.add(float(finite.max()) + 1e-6 if len(finite) else 1.0 + 1e-6)
    return sorted(t for t in grid if t > 0)


def model_curve(config: Config, truths: Mapping[str, Truth], scores: Scores,
                thresholds: Sequence[float]) -> list[CurvePoint]:
    """Each threshold replayed through sentinel's alert machine with the config's settings."""
    base = replace(config.alerting, threshold=None)
    points = []
    for threshold in thresholds:
        alerting = base.resolved(threshold)
        transitions = [t for service, (ts, risk) in scores.items()
                       for t in replay_alerts(alerting, config.step_seconds, service, ts, risk)]
        points.append(_point(threshold, grade(config, truths, episodes_from_transitions(transitions))))
    return points


def best_recall_at(curve: Sequence[CurvePoint], false_alerts_per_day: float) -> float:
    """The best early recall among the curve's points within the false-alert budget."""
    return max((p.early_recall for p in curve
                if p.false_alerts_per_service_day <= false_alerts_per_day), default=0.0)


def static_episodes(holds: np.ndarray, ts: np.ndarray, for_steps: int) -> Episodes:
    """Fire at the `for_steps`-th step of each run of `holds`, resolve at the first step after it."""
    padded = np.diff(np.concatenate(([0], holds.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(padded == 1), np.flatnonzero(padded == -1)  # ends: exclusive
    keep = ends - starts >= for_steps
    starts, ends = starts[keep], ends[keep]
    resolve = np.where(ends < len(ts), ts[np.minimum(ends, len(ts) - 1)], np.inf)
    return Episodes(ts[starts + for_steps - 1].astype(float), resolve.astype(float))


def static_values(config: Config, rule_metric: str, transform: Transform, scale: RobustScale,
                  series: Mapping[str, Labelled]) -> dict[str, np.ndarray]:
    column = tracked_metrics(config).index(rule_metric)
    out = {}
    for service, item in series.items():
        values = item.series.values
        if transform == "robust_z":
            values = scale.apply(service, values)
        out[service] = values[:, column]
    return out


def static_for_steps(config: Config) -> int:
    return max(1, math.ceil(STATIC_FOR_SECONDS / config.step_seconds))


def _static_grade(config: Config, truths: Mapping[str, Truth], series: Mapping[str, Labelled],
                  values: Mapping[str, np.ndarray], direction: Direction, threshold: float) -> Figures:
    episodes = {}
    for service, column in values.items():
        with np.errstate(invalid="ignore"):
            holds = column >= threshold if direction == ">=" else column <= threshold
        episodes[service] = static_episodes(holds, series[service].series.ts, static_for_steps(config))
    return grade(config, truths, episodes)


def tune_static(config: Config, train: Mapping[str, Labelled], truths: Mapping[str, Truth]
                ) -> tuple[StaticRule, RobustScale, Figures]:
    """The operator's best single-feature threshold on the training data (see the module doc)."""
    scale = RobustScale.fit(train)
    best: tuple[tuple[float, ...], StaticRule, Figures] | None = None
    for metric in config.feature_names:
        for transform in ("raw", "robust_z"):
            values = static_values(config, metric, transform, scale, train)
            pooled = np.concatenate(list(values.values()))
            pooled = pooled[np.isfinite(pooled)]
            if not len(pooled):
                continue
            for threshold in sorted(set(np.quantile(pooled, STATIC_QUANTILES).tolist())):
                for direction in (">=", "<="):
                    figures = _static_grade(config, truths, train, values, direction, threshold)
                    false_rate = figures.false_alerts_per_service_day or 0.0
                    within = false_rate <= STATIC_BUDGET
                    key = ((1.0, figures.early_recall or 0.0, -false_rate) if within
                           else (0.0, -false_rate, figures.early_recall or 0.0))
                    if best is None or key > best[0]:
                        best = (key, StaticRule(metric, transform, direction, threshold), figures)
    if best is None:
        raise ValueError("no feature has any training value to tune a static threshold on")
    return best[1], scale, best[2]


def static_curve(config: Config, rule: StaticRule, scale: RobustScale, train: Mapping[str, Labelled],
                 test: Mapping[str, Labelled], truths: Mapping[str, Truth]) -> list[CurvePoint]:
    """The chosen metric, transform and direction on the test data, its threshold swept over
    fine training quantiles (and one beyond every value: the no-alert end)."""
    pooled = np.concatenate(list(static_values(config, rule.metric, rule.transform, scale,
                                               train).values()))
    pooled = pooled[np.isfinite(pooled)]
    tail = np.geomspace(0.5, 1e-4, 40)
    q = 1 - tail if rule.direction == ">=" else tail
    values = static_values(config, rule.metric, rule.transform, scale, test)
    test_pooled = np.concatenate(list(values.values()))
    test_pooled = test_pooled[np.isfinite(test_pooled)]
    beyond = (np.max(test_pooled) + 1 if rule.direction == ">=" else np.min(test_pooled) - 1
              ) if len(test_pooled) else rule.threshold
    thresholds = sorted({*np.quantile(pooled, q).tolist(), rule.threshold, float(beyond)})
    return [_point(t, _static_grade(config, truths, test, values, rule.direction, t))
            for t in thresholds]


def assess(config: Config, train: Mapping[str, Labelled], test: Mapping[str, Labelled],
           scores: Scores, transitions: Iterable[AlertTransition],
           operating_threshold: float | None = None, report_from_ts: int | None = None,
           topology: Topology | None = None,
           sales: Sequence[tuple[float, bool]] | None = None) -> dict[str, Any]:
    """Everything QUALITY.md reports for one train/test pair, JSON-ready; with a `topology`
    (the data's, whether or not the model used it) also the figures per kind of failure:
    cascades and failures that start in the service itself (`by_cause`); with `sales`
    ((start_ts, announced) of the test data's sales), the figures split by sale phase."""
    transitions = list(transitions)
    train_truths = truths_of(config, train)
    test_truths = truths_of(config, test, report_from_ts)
    model = grade(config, test_truths, episodes_from_transitions(transitions),
                  model_pr_auc(config, test, test_truths, scores))
    all_risk = np.concatenate([r for _, r in scores.values()]) if scores else np.zeros(0)
    curve = model_curve(config, test_truths, scores, risk_thresholds(all_risk, operating_threshold))
    rule, scale, on_train = tune_static(config, train, train_truths)
    values = static_values(config, rule.metric, rule.transform, scale, test)
    static_scores = {s: (test[s].series.ts, v if rule.direction == ">=" else -v)
                     for s, v in values.items()}
    on_test = replace(_static_grade(config, test_truths, test, values, rule.direction,
                                    rule.threshold),
                      pr_auc=_round(model_pr_auc(config, test, test_truths,
                                                 {s: (t, np.nan_to_num(v, nan=-1e300))
                                                  for s, (t, v) in static_scores.items()})))
    s_curve = static_curve(config, rule, scale, train, test, test_truths)
    phases = None
    if sales is not None:
        static_at = [p for p in s_curve if (p.false_alerts_per_service_day or 0.0) <= 1.0]
        static_best = max(static_at, key=lambda p: (p.early_recall or 0.0,
                                                    -(p.false_alerts_per_service_day or 0.0)),
                          default=None)
        static_split = None
        if static_best is not None:
            episodes = {}
            for service, column in values.items():
                with np.errstate(invalid="ignore"):
                    holds = (column >= static_best.threshold if rule.direction == ">="
                             else column <= static_best.threshold)
                episodes[service] = static_episodes(holds, test[service].series.ts,
                                                    static_for_steps(config))
            static_split = {"threshold": static_best.threshold,
                            "false_alerts_per_service_day": static_best.false_alerts_per_service_day,
                            "early_recall": static_best.early_recall,
                            "phases": split_by_phase(config, test_truths, episodes, sales)}
        phases = {"model_operating": split_by_phase(
                      config, test_truths, episodes_from_transitions(transitions), sales),
                  "model_at_1": phases_at_budget(config, test_truths, scores, curve, sales, 1.0),
                  "static_at_1": static_split}
    return {
        "phases": phases,
        "model": {"operating_threshold": operating_threshold, **model.to_json()},
        "model_curve": [asdict(p) for p in curve],
        "static": {"rule": asdict(rule), "train": on_train.to_json(), "test": on_test.to_json()},
        "static_curve": [asdict(p) for p in s_curve],
        "at_equal_false_alerts": {str(b): {"model": best_recall_at(curve, b),
                                           "static": best_recall_at(s_curve, b)} for b in BUDGETS},
        **({"by_cause": _by_cause(config, test_truths, topology, transitions, scores, all_risk,
                                  operating_threshold, rule, scale, train, test)}
           if topology else {}),
    }


def _by_cause(config: Config, truths: Mapping[str, Truth], topology: Topology,
              transitions: list[AlertTransition], scores: Scores, all_risk: np.ndarray,
              operating_threshold: float | None, rule: StaticRule, scale: RobustScale,
              train: Mapping[str, Labelled], test: Mapping[str, Labelled]) -> dict[str, Any]:
    """`assess`'s model and static figures, counting one kind of failure at a time."""
    out = {}
    thresholds = risk_thresholds(all_risk, operating_threshold)
    for kind, subset in by_cause(config, truths, topology).items():
        curve = model_curve(config, subset, scores, thresholds)
        s_curve = static_curve(config, rule, scale, train, test, subset)
        out[kind] = {
            "model": grade(config, subset, episodes_from_transitions(transitions)).to_json(),
            "at_equal_false_alerts": {str(b): {"model": best_recall_at(curve, b),
                                               "static": best_recall_at(s_curve, b)}
                                      for b in BUDGETS}}
    return out


def read_scores(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The backtest's scores CSV (`service,ts,risk`) per service, in ts order."""
    rows: dict[str, list[tuple[float, float]]] = {}
    with Path(path).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["service"], []).append((float(row["ts"]), float(row["risk"])))
    out = {}
    for service, pairs in sorted(rows.items()):
        array = np.array(sorted(pairs))
        out[service] = (array[:, 0].astype(np.int64), array[:, 1])
    return out


def read_alerts(path: str | Path) -> list[AlertTransition]:
    """The backtest's alerts JSONL as transitions (extra fields ignored)."""
    out = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                doc = json.loads(line)
                ts = int(doc["ts"])
                out.append(AlertTransition(doc["service"], doc["state"], ts, float(doc["risk"]), ts))
    return out


def _point(threshold: float, figures: Figures) -> CurvePoint:
    return CurvePoint(round(float(threshold), 6), figures.false_alerts_per_service_day or 0.0,
                      figures.early_recall or 0.0, figures.detect_recall or 0.0)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)



# --- split by sale phase (issue 18: the sale calendar) ------------------------------------

SALE_BEFORE_SECONDS, SALE_AFTER_SECONDS = 600, 1800  # a sale's window: 10 min before to 30 after
PHASES = ("announced_sale", "unannounced_promotion", "quiet")


def sale_phase(ts: float, sales: Sequence[tuple[float, bool]]) -> str:
    """Which phase `ts` falls in, given sales as (start_ts, announced): within 10 minutes
    before to 30 minutes after the start of an announced sale, of an unannounced one, or
    neither (an announced sale wins where both overlap)."""
    near = [announced for start, announced in sales
            if start - SALE_BEFORE_SECONDS <= ts < start + SALE_AFTER_SECONDS]
    if not near:
        return "quiet"
    return "announced_sale" if any(near) else "unannounced_promotion"


def split_by_phase(config: Config, truths: Mapping[str, Truth], episodes: Mapping[str, Episodes],
                   sales: Sequence[tuple[float, bool]]) -> dict[str, dict[str, Any]]:
    """Per phase: the events that start in it and how many were announced early, and the
    false alerts (as `grade` counts them) that fire in it."""
    out = {p: {"events": 0, "early": 0, "false_alerts": 0} for p in PHASES}
    for service, truth in truths.items():
        ep = episodes.get(service, NO_EPISODES)
        inside = (ep.fire_ts >= truth.first_ts) & (ep.fire_ts <= truth.last_ts)
        fire = ep.fire_ts[inside]
        for event in counted(config, truth):
            phase = out[sale_phase(event.start_ts, sales)]
            phase["events"] += 1
            s = event.start_ts
            phase["early"] += bool(((fire >= s - config.horizon_seconds) & (fire < s)).any())
        starts = np.array([e.start_ts - config.horizon_seconds for e in truth.events], float)
        ends = np.array([e.end_ts for e in truth.events], float)
        excused = ((fire[:, None] >= starts[None, :]) & (fire[:, None] <= ends[None, :])).any(axis=1)
        for ts in fire[~excused].tolist():
            out[sale_phase(ts, sales)]["false_alerts"] += 1
    for figures in out.values():
        figures["early_recall"] = _ratio(figures["early"], figures["events"])
    return out


def phases_at_budget(config: Config, truths: Mapping[str, Truth], scores: Scores,
                     curve: Sequence[CurvePoint], sales: Sequence[tuple[float, bool]],
                     budget: float) -> dict[str, Any]:
    """The model's split by phase at the threshold of its curve with the best early recall
    within `budget` false alerts per service-day (ties: the fewest false alerts)."""
    within = [p for p in curve if (p.false_alerts_per_service_day or 0.0) <= budget]
    if not within:
        return {"threshold": None, "phases": None}
    best = max(within, key=lambda p: (p.early_recall or 0.0, -(p.false_alerts_per_service_day or 0.0)))
    alerting = replace(config.alerting, threshold=None).resolved(best.threshold)
    transitions = [t for service, (ts, risk) in scores.items()
                   for t in replay_alerts(alerting, config.step_seconds, service, ts, risk)]
    return {"threshold": best.threshold, "false_alerts_per_service_day":
            best.false_alerts_per_service_day, "early_recall": best.early_recall,
            "phases": split_by_phase(config, truths, episodes_from_transitions(transitions), sales)}
