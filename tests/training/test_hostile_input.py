"""Hostile input through the replay path (backtest, training) and the daemon's decode path:
one decode, one set of rules, memory that follows the samples, not the time between them."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.config.load import parse_config
from sentinel.core.buckets import Bucketer
from sentinel.core.features import tracked_metrics
from sentinel.core.samples import MAX_TS, MIN_TS, Rejection, Sample
from sentinel.training.backtest import write_scores
from sentinel.training.history import (
    DecodeStats,
    decode_lines,
    decode_replayed,
    iter_jsonl_lines,
    read_series,
    series_from_buckets,
)
from tests.testkit.loop import T0, make_loop, rec

NOW = T0 + 3600.0  # the loop's wall clock
CONFIG = parse_config({
    "step": "10s", "window": "30s", "horizon": "10s", "features": [{"name": "qps"}],
    "failure": {"any": [{"metric": "qps", "op": ">", "value": 1e9}]},
})


def line(service: object = "cart", ts: object = NOW, **metrics: object) -> bytes:
    return json.dumps({"service": service, "ts": ts, "metrics": metrics or {"qps": 1.0}},
                      ensure_ascii=True).encode()


def stream(n: int, start: float = NOW - 3000, service: str = "cart") -> list[bytes]:
    return [line(service, start + 10 * i) for i in range(n)]


def decisions(lines: list[bytes], tmp_path: Path) -> list[str]:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return ["accepted" if isinstance(d, Sample) else d.reason
            for d in decode_replayed(iter_jsonl_lines([path]), 300.0)]


# --- defect 3: the replay rejects what the daemon rejects --------------------------------------

def test_a_sample_30_days_ahead_is_rejected_as_future_in_the_replay(tmp_path: Path) -> None:
    lines = stream(200)
    lines.insert(100, line(ts=NOW + 30 * 86400))

    got = decisions(lines, tmp_path)

    assert got[100] == "future_ts"
    assert got.count("accepted") == 200  # the service keeps being scored after it


def test_invalid_utf8_in_a_file_is_rejected_not_replaced(tmp_path: Path) -> None:
    lines = [*stream(3), b'{"service": "gate\xff\xfeway", "ts": 1763899200, "metrics": {"qps": 1}}']

    assert decisions(lines, tmp_path)[-1] == "malformed_json"


def test_a_stream_resuming_after_a_long_silence_is_not_future(tmp_path: Path) -> None:
    lines = stream(100, start=NOW - 86400) + stream(100, start=NOW)

    assert set(decisions(lines, tmp_path)) == {"accepted"}


# --- defect 2: memory follows the samples, not the time span ---------------------------------

def test_far_apart_samples_of_one_service_do_not_allocate_the_span(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join([line(ts=MIN_TS), *stream(50), line(ts=MAX_TS)]) + b"\n")

    tracemalloc.start()
    try:
        series, stats = read_series([path], CONFIG)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 50e6, f"{peak / 1e6:.0f} MB for 52 samples"
    assert stats.rejected["future_ts"] == 1  # the 2100 line, ahead of the data's clock
    cart = series["cart"]
    assert len(cart.values) < 1000 and cart.ts[0] == MIN_TS and cart.last_ts == NOW - 3000 + 490
    assert list(cart.ts) == sorted(cart.ts)


def test_a_series_with_a_jump_indexes_its_steps_by_ts() -> None:
    bucketer = Bucketer(tracked_metrics(CONFIG), 10, 0.0, max_gap_steps=5)
    for ts in (1000.0, 1010.0, 1_000_000.0, 1_000_010.0):
        bucketer.add(Sample("cart", ts, {"qps": ts}))
    series = series_from_buckets(bucketer.flush(), 10)["cart"]

    assert series.index(1_000_010) == len(series.values) - 1
    assert series.values[series.index(1010), 0] == 1010.0


# --- defect 1: the backtest writes every accepted name ---------------------------------------

def test_a_lone_surrogate_service_never_reaches_the_scores_csv(tmp_path: Path) -> None:
    stats = DecodeStats()
    lines = [b'{"service": "sur\\ud800", "ts": 1763899200, "metrics": {"qps": 1}}', *stream(3)]
    samples = list(decode_lines(lines, stats))
    from sentinel.core.pipeline import Score

    write_scores([Score(s.service, int(s.ts), 0.5) for s in samples], tmp_path / "s.csv")
    assert stats.rejected == {"invalid_service": 1}


# --- the property: one corpus, two paths, the same decision and reason -----------------------

_services = st.one_of(
    st.sampled_from(["cart", "checkout", "秒杀"]),
    st.text(max_size=12),
    st.text(min_size=195, max_size=205, alphabet="ab"),
    st.sampled_from(["sur\ud800", "a\x00b", "tab\tname", "rtl\u202e", "", "  ", "x\u2028y"]),
    st.integers(), st.none(), st.lists(st.integers(), max_size=2))
_ts = st.one_of(
    st.integers(int(MIN_TS) - 5, int(MIN_TS) + 5), st.integers(int(MAX_TS) - 5, int(MAX_TS) + 5),
    st.floats(NOW - 86400, NOW + 300), st.floats(NOW + 300.001, NOW + 40 * 86400),
    st.sampled_from([NOW, NOW * 1000, -1, 4_070_908_800, "2025-11-23T12:00:00Z",
                     "2025-11-23T12:00:00", "nope", True, None]),
    st.floats(allow_nan=True, allow_infinity=True))
_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**30),
                    st.none(), st.text(max_size=3))


@st.composite
def _hostile(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["doc", "doc", "doc", "bytes", "huge", "encoding", "big_int"]))
    if kind == "bytes":
        raw = draw(st.binary(max_size=40)).replace(b"\n", b" ").replace(b"\r", b" ")
        return raw if raw.strip() else b"{"  # a blank line is no record in a file
    metrics = draw(st.one_of(st.dictionaries(st.sampled_from(["qps", "cpu", "q\ud800"]), _values,
                                             max_size=3), st.integers(), st.lists(_values)))
    raw = json.dumps({"service": draw(_services), "ts": draw(_ts), "metrics": metrics},
                     ensure_ascii=draw(st.booleans()))
    data = raw.encode("utf-8", errors="surrogatepass")
    if kind == "huge":
        data = data[:-1] + b', "pad": "' + b"x" * draw(st.integers(65_400, 66_000)) + b'"}'
    elif kind == "encoding":
        data = data.replace(b'"service": "', b'"service": "' + draw(
            st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf"])), 1)
    elif kind == "big_int":
        data = data.replace(b'"ts": ', b'"ts": ' + b"9" * draw(st.integers(300, 5000)) + b", \"x\": ", 1)
    return data


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_hostile(), min_size=1, max_size=12))
def test_replay_and_daemon_decide_every_hostile_line_alike(tmp_path_factory, corpus) -> None:
    # Each hostile line sits between two good lines at the loop's wall clock, so the data's
    # clock (the replay's "now") is the daemon's wall clock, as in a recording of its stream.
    lines = [line(ts=NOW)]
    for hostile in corpus:
        lines += [hostile, line(ts=NOW), line(ts=NOW)]
    replayed = decisions(lines, tmp_path_factory.mktemp("corpus"))

    loop = make_loop()
    loop.feed(*(rec(i, value=raw) for i, raw in enumerate(lines)))
    daemon = ["accepted"] * len(lines)
    for offset, reason in loop.dead_letters.sent:
        daemon[offset] = reason

    assert replayed == daemon
    assert all(r == "accepted" or r in {x[1] for x in loop.dead_letters.sent} for r in replayed)
    assert loop.metric("sentinel_samples_total") == replayed.count("accepted")


def test_rejections_count_the_same_in_stats_and_in_the_daemon(tmp_path: Path) -> None:
    lines = [*stream(5, start=NOW - 40), line("sur\ud800".encode("utf-8", "surrogatepass")
                                              .decode("utf-8", "surrogatepass")),
             line(ts=NOW + 30 * 86400)]
    stats = DecodeStats()
    accepted = list(decode_lines(lines, stats))

    assert len(accepted) == 5 and stats.rejected == {"invalid_service": 1, "future_ts": 1}
    assert isinstance(decisions([lines[-1]], tmp_path), list)
    assert not isinstance(Rejection, Sample)


# --- defect 7: the backtest's small ones ------------------------------------------------------

SHIPPED = Path(__file__).parents[2] / "config" / "sentinel.yaml"
DEMO_MODEL = Path(__file__).parents[2] / "sentinel" / "sim" / "demo_model"


def _backtest(tmp_path: Path, data: Path, capsys) -> tuple[int, str, str]:
    from sentinel.cli import main

    code = main(["backtest", "--config", str(SHIPPED), "--model", str(DEMO_MODEL), "--data",
                 str(data), "--alerts", str(tmp_path / "a.jsonl"), "--scores",
                 str(tmp_path / "s.csv"), "--report", str(tmp_path / "r.json")])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_missing_data_file_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    code, _out, err = _backtest(tmp_path, tmp_path / "absent.jsonl", capsys)

    assert code == 2 and "no such file" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_empty_data_gives_strict_json_without_nan(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")

    code, out, err = _backtest(tmp_path, empty, capsys)

    if code == 0:
        json.loads(out.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(c))
        json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    else:
        assert code == 2 and "Traceback" not in err


def test_the_backtest_says_how_many_lines_it_rejected(tmp_path: Path, capsys) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\n".join([*stream(100), b"{oops", line("sur\ud800")]) + b"\n")

    code, _out, err = _backtest(tmp_path, data, capsys)

    assert code == 0, err
    assert "2 lines rejected" in err and "malformed_json 1" in err and "invalid_service 1" in err
