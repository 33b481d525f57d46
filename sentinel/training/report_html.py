"""`sentinel backtest --report-html R.html`: one self-contained page a person can read.

The page holds, in order: the figures of the model next to the static baseline stored with
it (the same table as `--report`), the model's operating curve (false alerts per
service-day against early recall, sweeping its alert threshold through the same alert
machine; the baseline's one operating point beside it), and one zoomed panel per failure
event and per false alert: the features, the risk, the threshold and the alert from
`BEFORE_SECONDS` before to `AFTER_SECONDS` after (at least `MIN_STEPS_BEFORE` /
`MIN_STEPS_AFTER` steps: 5-minute data gets a longer panel), with the firing's drivers drawn
thick and named. The other features are thin grey lines without a legend entry, so a panel
reads the same with 4 features or 40. Images are PNG, embedded as base64: the file needs
nothing beside it.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.config.schema import Config
from sentinel.core.alerts import AlertTransition
from sentinel.core.attribution import Driver
from sentinel.core.features import tracked_metrics
from sentinel.core.pipeline import Score
from sentinel.training.history import Labelled

BEFORE_SECONDS, AFTER_SECONDS = 20 * 60, 10 * 60
MIN_STEPS_BEFORE, MIN_STEPS_AFTER = 12, 6
MAX_PANELS = 60  # events first, then false alerts; the rest are counted, not drawn
LABELLED_OTHERS = 3  # without drivers: the features that moved most are named
COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive")

ROWS = (  # (label, key in the overall figures, format)
    ("failures counted", "failures", "{:d}"),
    ("detected early", "detected_early", "{:d}"),
    ("early recall", "early_recall", "{:.3f}"),
    ("median lead (s)", "median_lead_seconds", "{:.0f}"),
    ("firings", "firings", "{:d}"),
    ("false alerts", "false_alerts", "{:d}"),
    ("false alerts per service-day", "false_alerts_per_service_day", "{:.3f}"),
    ("PR-AUC", "pr_auc", "{:.4f}"),
)


@dataclass(frozen=True)
class Panel:
    kind: str  # "failure" | "false alert"
    service: str
    ts: int  # the event's start or the false firing's ts
    end_ts: int  # the event's end (= ts for a false alert)
    firing: AlertTransition | None  # the firing that announced it (or the false one)


def write_report_html(config: Config, report: Mapping[str, Any], labelled: Mapping[str, Labelled],
                      scores: Sequence[Score], transitions: Sequence[AlertTransition],
                      threshold: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    by_service: dict[str, list[Score]] = {}
    for score in scores:
        by_service.setdefault(score.service, []).append(score)
    panels = find_panels(config, labelled, transitions)
    parts = [_HEAD, f"<h1>Sentinel backtest: model {html.escape(str(report.get('model_version')))}</h1>",
             _summary(report), _figures_table(report),
             "<h2>Operating curve</h2>", _img(_curve_png(config, labelled, by_service, report)),
             f"<h2>Failures and false alerts ({len(panels)})</h2>"]
    if len(panels) > MAX_PANELS:
        parts.append(f"<p>The first {MAX_PANELS} panels are drawn (failures first); "
                     f"{len(panels) - MAX_PANELS} more are left out.</p>")
    for panel in panels[:MAX_PANELS]:
        parts.append(_panel_html(config, panel, labelled[panel.service],
                                 by_service.get(panel.service, []), transitions, threshold))
    parts.append("</body></html>\n")
    Path(out).write_text("\n".join(parts), encoding="utf-8")


def find_panels(config: Config, labelled: Mapping[str, Labelled],
                transitions: Sequence[AlertTransition]) -> list[Panel]:
    """Each failure event (with the firing that announced it, if any: the first firing in
    [start - horizon, end]), then each false alert (a firing in no such span), in time order."""
    horizon = config.horizon_seconds
    firings: dict[str, list[AlertTransition]] = {}
    for t in transitions:
        if t.state == "firing":
            firings.setdefault(t.service, []).append(t)
    events, false = [], []
    for service, item in sorted(labelled.items()):
        mine = firings.get(service, [])
        for event in item.events:
            announcing = [f for f in mine if event.start_ts - horizon <= f.ts <= event.end_ts]
            events.append(Panel("failure", service, event.start_ts, event.end_ts,
                                announcing[0] if announcing else None))
        for f in mine:
            if not any(e.start_ts - horizon <= f.ts <= e.end_ts for e in item.events):
                false.append(Panel("false alert", service, f.ts, f.ts, f))
    return sorted(events, key=lambda p: p.ts) + sorted(false, key=lambda p: p.ts)


def _summary(report: Mapping[str, Any]) -> str:
    thresholds = report.get("alert_thresholds", {})
    data = report.get("data", {})
    items = [f"alert threshold {thresholds.get('fire')} (resolve below {thresholds.get('resolve')})",
             f"baseline rule: <code>{html.escape(str(report.get('baseline', {}).get('rule')))}</code>"]
    items += [f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in data.items()
              if isinstance(v, int | float)]
    drivers = report.get("drivers")
    if drivers:
        tops = ", ".join(f"{html.escape(m)} {n}" for m, n in drivers["top_driver"].items())
        items.append(f"firings with drivers: {drivers['with_drivers']} of {drivers['firings']}"
                     + (f"; top driver: {tops}" if tops else ""))
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _figures_table(report: Mapping[str, Any]) -> str:
    model = report.get("model", {}).get("overall", {})
    base = report.get("baseline", {}).get("overall", {})

    def cell(figures: Mapping[str, Any], key: str, fmt: str) -> str:
        value = figures.get(key)
        return "–" if value is None else fmt.format(value)

    rows = "".join(f"<tr><th>{label}</th><td>{cell(model, key, fmt)}</td>"
                   f"<td>{cell(base, key, fmt)}</td></tr>" for label, key, fmt in ROWS)
    return ("<h2>Figures</h2><table><tr><th></th><th>model</th><th>static baseline</th></tr>"
            f"{rows}</table>")


def _curve_png(config: Config, labelled: Mapping[str, Labelled],
               by_service: Mapping[str, list[Score]], report: Mapping[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    from sentinel.training.quality import model_curve, risk_thresholds, truths_of

    scores = {s: (np.array([x.ts for x in v]), np.array([x.risk for x in v]))
              for s, v in by_service.items()}
    risks = np.concatenate([r for _, r in scores.values()]) if scores else np.zeros(0)
    truths = truths_of(config, labelled)
    curve = model_curve(config, truths, scores, risk_thresholds(risks)) if len(risks) else []
    fig, ax = plt.subplots(figsize=(7, 4))
    if curve:
        points = sorted(curve, key=lambda p: -p.threshold)
        ax.plot([p.false_alerts_per_service_day for p in points], [p.early_recall for p in points],
                "-o", ms=3, color="black", label="model (threshold swept)")
    for name, key, marker in (("static baseline", "baseline", "s"),
                              ("model at its threshold", "model", "*")):
        overall = report.get(key, {}).get("overall", {})
        x, y = overall.get("false_alerts_per_service_day"), overall.get("early_recall")
        if x is not None and y is not None:
            ax.plot([x], [y], marker, ms=10, label=name)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("false alerts per service-day (log beyond 1)")
    ax.set_ylabel("early recall")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def _panel_html(config: Config, panel: Panel, item: Labelled, scores: list[Score],
                transitions: Sequence[AlertTransition], threshold: float) -> str:
    firing = panel.firing
    drivers = firing.drivers if firing is not None else ()
    if panel.kind == "failure":
        when = (f"announced by a firing at {_utc(firing.ts)} ({panel.ts - firing.ts} s before)"
                if firing is not None and firing.ts < panel.ts else
                f"alert at {_utc(firing.ts)} (not early)" if firing is not None else "missed")
        title = f"{panel.service}: failure at {_utc(panel.ts)}, {when}"
    else:
        title = f"{panel.service}: false alert at {_utc(panel.ts)}"
    listed = "".join(f"<li>{html.escape(d.text)} (carries {d.contribution:.2g} of the risk)</li>"
                     for d in drivers)
    why = f"<ul>{listed}</ul>" if drivers else "<p>No drivers recorded for this panel.</p>"
    png = _png(panel_figure(config, panel, item, scores, transitions, threshold, drivers))
    return f"<section><h3>{html.escape(title)}</h3>{_img(png)}{why}</section>"


def panel_figure(config: Config, panel: Panel, item: Labelled, scores: list[Score],
                 transitions: Sequence[AlertTransition], threshold: float,
                 drivers: Sequence[Driver]) -> Any:
    """The zoomed figure of one panel (a matplotlib Figure, laid out)."""
    import matplotlib.pyplot as plt

    step = config.step_seconds
    start = panel.ts - max(BEFORE_SECONDS, MIN_STEPS_BEFORE * step)
    end = panel.end_ts + max(AFTER_SECONDS, MIN_STEPS_AFTER * step)
    ts = item.series.ts
    inside = (ts >= start) & (ts <= end)
    minutes = (ts[inside] - panel.ts) / 60.0
    metrics = tracked_metrics(config)
    values = item.series.values[inside][:, : len(config.features)]
    drivers = [d for d in drivers if d.service is None]  # dependencies: listed under the panel
    named = [d.metric for d in drivers]
    if not named:  # no attribution: name the features that moved most in the panel
        spread = np.nan_to_num(np.nanstd(_normalised(values), axis=0) if len(values) else np.zeros(0))
        named = [metrics[j] for j in np.argsort(-spread, kind="stable")[:LABELLED_OTHERS]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 4.2), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    scaled = _normalised(values)
    for j, name in enumerate(metrics[: len(config.features)]):
        if name not in named:
            top.plot(minutes, scaled[:, j], color="0.6", lw=0.6, alpha=0.6)
    for rank, name in enumerate(named):
        j = metrics.index(name)
        label = name if not drivers else f"{rank + 1}. {name} ({drivers[rank].contribution:.2g})"
        top.plot(minutes, scaled[:, j], color=COLORS[rank % len(COLORS)], lw=2.0, label=label)
    top.set_ylabel("features\n(scaled in panel)")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
               title="drivers (risk carried)" if drivers else "moved most", title_fontsize=8)
    mine = [s for s in scores if start <= s.ts <= end]
    bottom.plot([(s.ts - panel.ts) / 60.0 for s in mine], [s.risk for s in mine], color="black",
                lw=1.2, label="risk")
    bottom.axhline(threshold, color="tab:orange", ls="--", lw=1.0, label="threshold")
    bottom.set_ylim(-0.02, 1.05)
    bottom.set_ylabel("risk")
    for event in item.events:
        if event.end_ts + step >= start and event.start_ts <= end:
            for ax in (top, bottom):
                ax.axvspan((event.start_ts - panel.ts) / 60.0,
                           (event.end_ts + step - panel.ts) / 60.0, color="tab:red", alpha=0.15,
                           lw=0)
    for t in transitions:
        if t.service == panel.service and start <= t.ts <= end:
            for ax in (top, bottom):
                ax.axvline((t.ts - panel.ts) / 60.0, color="tab:orange" if t.state == "firing"
                           else "tab:green", lw=1.2, ls="-" if t.state == "firing" else ":")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    bottom.set_xlabel(f"minutes from {'the failure' if panel.kind == 'failure' else 'the alert'} "
                      "(red: failing; orange line: alert fired, green dotted: resolved)")
    fig.tight_layout()
    return fig


def _normalised(values: np.ndarray) -> np.ndarray:
    """Each column scaled to [0, 1] over the panel (a constant one sits at 0.5)."""
    if not len(values):
        return values
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        span = high - low
        out = np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.5)
    return np.where(np.isnan(values), np.nan, out)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def _img(png: bytes) -> str:
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _utc(ts: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sentinel backtest</title>
<style>
body { font-family: sans-serif; max-width: 1000px; margin: 1em auto; padding: 0 1em; }
table { border-collapse: collapse; } th, td { border: 1px solid #ccc; padding: 4px 10px; }
td { text-align: right; } img { max-width: 100%; height: auto; display: block; }
section { border-top: 1px solid #ddd; margin-top: 1em; }
</style></head><body>"""
