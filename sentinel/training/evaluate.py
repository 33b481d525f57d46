"""Backtest figures: how early and how reliably alerts announce failures.

- A failure event is *detected early* when its service fired in [start - horizon, start);
  its *lead time* is start minus the first such firing.
- A firing is *false* when it is in no [start - horizon, end] of its service's events.
- Events starting before the service's data covers one window plus one horizon are not
  counted: no detector could have announced them.
- PR-AUC is the average precision of the risk against the window targets (windows inside
  a failure have no target and are left out).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sentinel.config.schema import AlertingConfig, Config
from sentinel.core.alerts import AlertMachine, AlertTransition
from sentinel.core.labels import FailureEvent


@dataclass(frozen=True)
class Coverage:
    first_ts: int
    last_ts: int

    @property
    def days(self) -> float:
        return max(0.0, (self.last_ts - self.first_ts) / 86400.0)


def replay_alerts(alerting: AlertingConfig, step_seconds: int, service: str,
                  ts: np.ndarray, risk: np.ndarray) -> list[AlertTransition]:
    """Run one service's scored steps through a fresh alert machine."""
    machine = AlertMachine(alerting, step_seconds)
    out = (machine.observe(service, int(t), float(r)) for t, r in zip(ts, risk, strict=True))
    return [t for t in out if t is not None]


def average_precision(y: np.ndarray, risk: np.ndarray) -> float | None:
    keep = ~np.isnan(y)
    y, risk = y[keep], risk[keep]
    positives = y.sum()
    if positives == 0:
        return None
    order = np.argsort(-risk, kind="stable")
    hits, ranked = y[order], risk[order]
    # Tied risks are one threshold: precision is taken at the end of each tie, so the row
    # order of equal scores (a saturated or constant model) cannot change the figure.
    ends = np.append(np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1)
    true_positives = np.cumsum(hits)[ends]
    precision = true_positives / (ends + 1)
    return float((precision * np.diff(true_positives, prepend=0.0)).sum() / positives)


def evaluate(config: Config, events: dict[str, list[FailureEvent]],
             transitions: Iterable[AlertTransition], coverage: dict[str, Coverage],
             y: np.ndarray | None = None, risk: np.ndarray | None = None) -> dict[str, object]:
    horizon = config.horizon_seconds
    firings: dict[str, list[int]] = {}
    for t in transitions:
        if t.state == "firing":
            firings.setdefault(t.service, []).append(t.ts)
    per_service: dict[str, dict[str, object]] = {}
    all_leads: list[float] = []
    totals = {"failures": 0, "detected": 0, "false_alerts": 0, "firings": 0}
    service_days = 0.0
    for service, cov in sorted(coverage.items()):
        counted = [e for e in events.get(service, [])
                   if e.start_ts - horizon >= cov.first_ts + config.window_seconds]
        fired = sorted(firings.get(service, []))
        leads = []
        for event in counted:
            early = [f for f in fired if event.start_ts - horizon <= f < event.start_ts]
            if early:
                leads.append(float(event.start_ts - early[0]))
        false = [f for f in fired if not any(e.start_ts - horizon <= f <= e.end_ts
                                              for e in events.get(service, []))]
        per_service[service] = {
            "failures": len(counted), "detected_early": len(leads),
            "early_recall": _ratio(len(leads), len(counted)),
            "median_lead_seconds": _pct(leads, 50), "firings": len(fired),
            "false_alerts": len(false), "days": round(cov.days, 3),
            "false_alerts_per_day": _ratio(len(false), cov.days),
        }
        all_leads += leads
        totals["failures"] += len(counted)
        totals["detected"] += len(leads)
        totals["false_alerts"] += len(false)
        totals["firings"] += len(fired)
        service_days += cov.days
    overall = {
        "failures": totals["failures"], "detected_early": totals["detected"],
        "early_recall": _ratio(totals["detected"], totals["failures"]),
        "median_lead_seconds": _pct(all_leads, 50), "p25_lead_seconds": _pct(all_leads, 25),
        "firings": totals["firings"], "false_alerts": totals["false_alerts"],
        "service_days": round(service_days, 3),
        "false_alerts_per_service_day": _ratio(totals["false_alerts"], service_days),
        "pr_auc": None if y is None or risk is None else _round(average_precision(y, risk)),
        "positive_window_share": (None if y is None or not np.isfinite(y).any()
                                  else _round(float(np.nanmean(y)))),
    }
    return {"overall": overall, "services": per_service}


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
