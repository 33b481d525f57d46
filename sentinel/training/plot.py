"""The backtest plot: per service, its metrics above and its risk below, with the failure
spans shaded, the alert threshold drawn, and firings marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sentinel.config.schema import Config
from sentinel.core.alerts import AlertTransition
from sentinel.core.features import tracked_metrics
from sentinel.core.pipeline import Score
from sentinel.training.history import Labelled


def plot_backtest(config: Config, labelled: dict[str, Labelled], scores: list[Score],
                  transitions: list[AlertTransition], threshold: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = backtest_figure(config, labelled, scores, transitions, threshold)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def backtest_figure(config: Config, labelled: dict[str, Labelled], scores: list[Score],
                    transitions: list[AlertTransition], threshold: float) -> Any:
    """The figure `plot_backtest` saves (a matplotlib Figure, laid out)."""
    import matplotlib.pyplot as plt

    services = sorted(labelled)
    metrics = tracked_metrics(config)
    fig, axes = plt.subplots(2 * len(services), 1, figsize=(16, 3.2 * len(services)),
                             sharex=True, squeeze=False)
    t0 = min(item.series.first_ts for item in labelled.values())
    hours = lambda ts: (np.asarray(ts, dtype=float) - t0) / 3600.0  # noqa: E731
    for row, service in enumerate(services):
        item = labelled[service]
        top, bottom = axes[2 * row, 0], axes[2 * row + 1, 0]
        x = hours(item.series.ts)
        for i, name in enumerate(metrics):
            column = item.series.values[:, i]
            peak = np.nanmax(column) if np.isfinite(column).any() else 1.0
            top.plot(x, column / (peak or 1.0), lw=0.6, label=f"{name} (/{peak:.3g})")
        top.set_ylabel(f"{service}\nmetrics / max")
        legend(top, len(metrics))
        mine = [s for s in scores if s.service == service]
        bottom.plot(hours([s.ts for s in mine]), [s.risk for s in mine], lw=0.7, color="black")
        bottom.axhline(threshold, color="tab:orange", ls="--", lw=0.8)
        bottom.set_ylim(-0.02, 1.05)
        bottom.set_ylabel("risk")
        for event in item.events:
            for ax in (top, bottom):
                ax.axvspan(*hours([event.start_ts, event.end_ts + config.step_seconds]),
                           color="tab:red", alpha=0.25, lw=0)
        fired = [t.ts for t in transitions if t.service == service and t.state == "firing"]
        bottom.plot(hours(fired), [1.0] * len(fired), "v", color="tab:orange", ms=6)
    axes[-1, 0].set_xlabel("hours since start (red: failure, orange: alert firing)")
    fig.tight_layout()
    return fig


LEGEND_ROWS = 12  # entries per legend column beside a metrics row (3.2 in tall at 6 pt)


def legend(ax: Any, entries: int) -> Any:
    """A legend beside the axes, in as many columns as it takes: it stays inside the figure
    with 4 metrics or 40 (one row of 40 entries ran far off the right edge)."""
    if entries <= 6:
        return ax.legend(loc="upper left", fontsize=7, ncol=entries)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=6, frameon=False,
                     ncol=-(-entries // LEGEND_ROWS), borderaxespad=0.0)
