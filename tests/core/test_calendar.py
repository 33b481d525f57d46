"""The sale calendar as context channels (sentinel.core.calendar) and its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sentinel.config.calendar_file import calendar_text, parse_events, read_calendar
from sentinel.config.load import parse_config
from sentinel.config.schema import SaleEvent
from sentinel.core.calendar import CALENDAR_CHANNELS, CalendarProvider, calendar_channels
from sentinel.core.context import ContextBatch, ContextLayout
from sentinel.core.pipeline import Pipeline
from sentinel.core.samples import Sample
from sentinel.errors import ConfigError

T0 = 1_763_942_400
SALE = SaleEvent("double-11", T0 + 3600, T0 + 7200, ("checkout",), 8.0)
ALL = SaleEvent("site-wide", T0 + 10_800, T0 + 11_400, None, 0.5)


def _at(service: str, *ts: int) -> np.ndarray:
    return calendar_channels([service], np.array([ts]), [SALE, ALL])[0]


def test_channels_count_down_to_a_start_hold_during_it_and_fade_after() -> None:
    until, since, mult, inside = range(4)
    far, soon, start, during, after = _at("checkout", T0, T0 + 1800, T0 + 3600, T0 + 5400, T0 + 7300)
    assert far.tolist() == [0, 0, 0, 0]  # an hour before: the lookahead's edge
    assert soon[until] == pytest.approx(0.5) and soon[mult] == pytest.approx(3.0)
    assert soon[inside] == 0 and soon[since] == 0
    assert start[since] == pytest.approx(1.0) and start[inside] == 1 and start[mult] == 3.0
    assert during[since] == pytest.approx(0.5) and during[inside] == 1
    assert after[inside] == 0 and after[since] == 0  # the start is 3700 s behind: past the hour
    assert after[mult] == -1.0  # the next event within the hour: the site-wide one, x0.5
    assert after[until] == pytest.approx(100 / 3600)  # the site-wide sale starts 3500 s ahead
    assert _at("checkout", T0 + 10_800)[0][mult] == pytest.approx(-1.0)  # "all": log2(0.5)


def test_an_event_for_other_services_leaves_the_channels_neutral() -> None:
    assert not _at("search", T0 + 1800, T0 + 5400).any()
    assert _at("search", T0 + 10_800)[0][3] == 1.0  # the site-wide one applies


def test_channels_are_bounded_whatever_the_multiplier() -> None:
    huge = SaleEvent("huge", T0, T0 + 60, None, 1000.0)
    tiny = SaleEvent("tiny", T0 + 120, T0 + 180, None, 0.001)
    values = calendar_channels(["a"], np.array([[T0, T0 + 120]]), [huge, tiny])
    assert values.dtype == np.float32 and values.shape == (1, 2, len(CALENDAR_CHANNELS))
    assert np.abs(values).max() <= 4.0


def test_provider_builds_the_batch_shape_and_names_the_event_in_progress() -> None:
    provider = CalendarProvider([SALE, ALL])
    batch = ContextBatch(("checkout", "search"), np.array([T0 + 3700, T0 + 3700]), 10, 6)
    values = provider.build(batch)
    assert values.shape == (2, 6, 4)
    assert values[0, -1, 3] == 1 and values[1, -1, 3] == 0
    assert provider.event_at("checkout", T0 + 3700) == SALE
    assert provider.event_at("search", T0 + 3700) is None


CONFIG = parse_config({
    "step": "10s", "window": "40s", "horizon": "20s", "features": [{"name": "qps"}],
    "failure": {"any": [{"metric": "qps", "op": ">=", "value": 1000}]},
    "alerting": {"threshold": 0.5, "for_steps": 1}, "stream": {"allowed_lateness": "0s"},
})


ALERTING = CONFIG.alerting.resolved(None)


class Constant:
    """A model that records the calendar it is fed and always says 0.9."""

    context = ContextLayout.of({"calendar": CALENDAR_CHANNELS})

    def __init__(self) -> None:
        self.fed: list[np.ndarray] = []

    def score(self, windows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        assert context is not None
        self.fed.append(context)
        return np.full(len(windows), 0.9)


def _samples(service: str, first: int, n: int) -> list[Sample]:
    return [Sample(service, first + 10 * i, {"qps": 100.0}, ()) for i in range(n)]


def test_an_alert_during_a_planned_event_names_it_and_one_outside_does_not() -> None:
    model = Constant()
    pipeline = Pipeline(CONFIG, model, ALERTING, {"calendar": CalendarProvider([SALE])})
    during = pipeline.process(_samples("checkout", T0 + 3600, 8)).transitions
    assert [t.planned_event for t in during] == ["double-11"]
    assert during[0].to_json()["planned_event"] == "double-11"
    quiet = Pipeline(CONFIG, Constant(), ALERTING, {"calendar": CalendarProvider([SALE])})
    outside = quiet.process(_samples("search", T0 + 3600, 8)).transitions
    assert [t.planned_event for t in outside] == [""] and "planned_event" not in outside[0].to_json()
    assert model.fed[0][..., 3].max() == 1.0


def test_a_calendar_model_served_without_a_calendar_gets_a_quiet_one() -> None:
    model = Constant()
    Pipeline(CONFIG, model, ALERTING).process(_samples("checkout", T0 + 3600, 8))
    assert model.fed and not np.concatenate(model.fed).any()


def test_calendar_file_round_trips_and_sorts_by_start(tmp_path: Path) -> None:
    path = tmp_path / "sales.yaml"
    path.write_text(calendar_text([ALL, SALE]))
    assert read_calendar(path) == (SALE, ALL)
    path.write_text("")
    assert read_calendar(path) == ()
    path.write_text("events:\n  - {name: a, start: '2025-11-24T01:00:00+08:00', end: 1763946000,"
                    " multiplier: 3}\n")
    assert read_calendar(path)[0].start_ts == 1763917200.0


@pytest.mark.parametrize(("events", "key", "expected"), [
    ([{"name": "a", "start": 1, "end": T0}], r"\[0\] \(a\)\.start", "in 2000..2100"),
    ([{"name": "a", "start": T0, "end": T0}], r"\(a\)\.end", "a time after start"),
    ([{"name": "a", "start": T0, "end": T0 + 1, "multiplier": 0}], r"\.multiplier",
     r"\(0, 1000\]"),
    ([{"name": "a", "start": T0, "end": T0 + 1, "services": []}], r"\.services", "'all' or"),
    ([{"name": "a", "start": "noon", "end": T0 + 1}], r"\.start", "RFC 3339"),
    ([{"name": "a", "start": T0, "end": T0 + 1, "size": 3}], r"\[0\]\.size", "no such key"),
    ([{"name": "a", "start": T0, "end": T0 + 1}, {"name": "a", "start": T0, "end": T0 + 2}],
     r"\[1\]\.name", "no other event"),
    ([{"start": T0, "end": T0 + 1}], r"\[0\]\.name", "non-empty name"),
])
def test_a_bad_event_names_its_index_name_and_field(events: list, key: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        parse_events(events, "sales.yaml: events")
    assert caught.match(key)
