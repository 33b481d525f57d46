"""`sentinel backtest --report-html`: one self-contained page, readable with 4 or 40 features,
checked in a real headless browser (Debian's chromium-headless-shell) where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sentinel.config.load import parse_config
from sentinel.config.schema import Config
from sentinel.core.samples import Sample
from sentinel.training.backtest import drivers_summary, replay
from sentinel.training.evaluate import Coverage, evaluate
from sentinel.training.history import label, series_from_buckets
from sentinel.training.plot import backtest_figure
from sentinel.training.report_html import find_panels, panel_figure, write_report_html

T0 = 1_763_942_400
CHROME = shutil.which("chromium-headless-shell") or shutil.which("chromium")


def _config(n: int) -> Config:
    return parse_config({
        "step": "10s", "window": "60s", "horizon": "60s",
        "features": [{"name": f"metric_with_a_long_name_{i:02d}"} for i in range(n)],
        "failure": {"any": [{"metric": "metric_with_a_long_name_01", "op": ">=", "value": 50}],
                    "for": "20s"},
        "alerting": {"threshold": 0.5, "for_steps": 2, "resolve_steps": 2, "cooldown": "60s"},
        "stream": {"allowed_lateness": "0s"},
    })


class Model:
    """Risk follows feature 1 (the failure metric); a blip of feature 0 makes a false alert."""

    def score(self, windows: np.ndarray) -> np.ndarray:
        return np.clip((windows[:, -1, 1] - 10.0) / 30.0 + (windows[:, -1, 0] > 30) * 0.9, 0, 1)


def _backtest(n: int, tmp_path: Path) -> tuple[Config, Path, dict, list]:
    config = _config(n)
    rng = np.random.default_rng(3)
    samples = []
    for step in range(360):  # an hour; "a" fails at 30 min after a 3-minute climb
        for service in ("a", "b"):
            values = rng.normal(10.0, 1.0, n)
            if service == "a" and 162 <= step < 200:
                values[1] = 10.0 + 8.0 * (step - 161)
            if service == "b" and 250 <= step < 254:
                values[0] = 40.0  # a blip: the model fires, nothing fails
            samples.append(Sample(service, T0 + 10 * step + 1,
                                  {f"metric_with_a_long_name_{i:02d}": float(v)
                                   for i, v in enumerate(values)}))
    alerting = config.alerting.resolved(None)
    run = replay(config, Model(), samples, alerting)
    labelled = {s: label(x, config) for s, x in
                series_from_buckets(run.buckets, config.step_seconds).items()}
    coverage = {s: Coverage(x.series.first_ts, x.series.last_ts) for s, x in labelled.items()}
    events = {s: x.events for s, x in labelled.items()}
    report = {"model_version": "test", "alert_thresholds": {"fire": 0.5, "resolve": 0.3},
              "data": {"samples": len(samples)},
              "model": evaluate(config, events, run.transitions, coverage),
              "baseline": {"rule": "metric_with_a_long_name_01 >= 40",
                           **evaluate(config, events, [], coverage)},
              "drivers": drivers_summary(run.transitions)}
    out = tmp_path / f"report-{n}.html"
    write_report_html(config, report, labelled, run.scores, run.transitions, 0.5, out)
    return config, out, labelled, run


@pytest.mark.parametrize("n", [4, 40])
def test_the_report_is_one_self_contained_page_with_a_panel_per_failure_and_false_alert(
        n: int, tmp_path: Path) -> None:
    config, out, labelled, run = _backtest(n, tmp_path)
    page = out.read_text()
    panels = find_panels(config, labelled, run.transitions)
    assert [p.kind for p in panels] == ["failure", "false alert"]
    assert panels[0].firing is not None and panels[0].firing.ts < panels[0].ts, "announced early"
    assert panels[0].firing.drivers[0].metric == "metric_with_a_long_name_01"
    assert panels[1].firing.drivers[0].metric == "metric_with_a_long_name_00"
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == 1 + len(panels), "the curve, and one image per panel"
    assert all(s.startswith("data:image/png;base64,") for s in sources), "nothing outside the file"
    assert "<th>static baseline</th>" in page and "early recall" in page
    assert ("firings with drivers: 2 of 2; top driver: metric_with_a_long_name_00 1, "
            "metric_with_a_long_name_01 1") in page
    assert "metric_with_a_long_name_01: " in page and "sd above this service&#x27;s normal" in page


@pytest.mark.parametrize("n", [4, 40])
def test_no_legend_runs_off_a_figure(n: int, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    config, _, labelled, run = _backtest(n, tmp_path)
    figures = [backtest_figure(config, labelled, run.scores, run.transitions, 0.5)]
    for panel in find_panels(config, labelled, run.transitions):
        figures.append(panel_figure(config, panel, labelled[panel.service],
                                    [s for s in run.scores if s.service == panel.service],
                                    run.transitions, 0.5, panel.firing.drivers))
    for fig in figures:
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert legends
        for legend in legends:
            extent = legend.get_window_extent(renderer)
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, (n, extent, box)
            assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, (n, extent, box)
        plt.close(fig)


@pytest.mark.skipif(CHROME is None, reason="no headless Chromium (apt-get install "
                    "chromium-headless-shell; .ci/run installs it)")
def test_a_real_browser_renders_the_report_with_its_images(tmp_path: Path) -> None:
    """Headless Chromium loads the file and paints it: a screenshot of the top of the page
    shows the figures table and the operating curve (many distinct colours), not a blank or
    broken page."""
    from PIL import Image

    _, out, _, _ = _backtest(40, tmp_path)
    shot = tmp_path / "shot.png"
    done = subprocess.run([CHROME, "--headless", "--no-sandbox", "--disable-gpu",
                           f"--screenshot={shot}", "--window-size=1100,1400",
                           "--hide-scrollbars", out.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (1400, 1100)
    inked = (image < 200).any(axis=2).mean()
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert inked > 0.02, f"the page looks blank ({inked:.3f} of pixels inked)"
    assert colours > 200, f"no anti-aliased figure painted ({colours} colours)"
    # a page whose images are broken paints their alt text boxes: the same check on a copy
    # with the image data cut fails, so the figure above came from the embedded PNGs
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[^\"]+", "base64,AAAA", out.read_text()))
    subprocess.run([CHROME, "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={tmp_path / 'broken.png'}", "--window-size=1100,1400",
                    "--hide-scrollbars", broken.as_uri()], capture_output=True, timeout=120)
    empty = np.asarray(Image.open(tmp_path / "broken.png").convert("RGB"))
    assert len(np.unique(empty.reshape(-1, 3), axis=0)) < colours / 2


def test_a_panel_with_a_dependency_driver_draws_the_metrics_and_lists_the_dependency(
        tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from sentinel.core.attribution import dependency_driver

    config, _, labelled, run = _backtest(4, tmp_path)
    panel = find_panels(config, labelled, run.transitions)[0]
    drivers = (dependency_driver("inventory", 0.6), *panel.firing.drivers)
    fig = panel_figure(config, panel, labelled[panel.service],
                       [s for s in run.scores if s.service == panel.service],
                       run.transitions, 0.5, drivers)
    entries = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert entries[0].startswith("1. metric_with_a_long_name_01"), entries
    assert not any("inventory" in e for e in entries)
    plt.close(fig)
