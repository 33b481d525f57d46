"""Decoding the Sample contract: good messages become Samples, bad ones a Rejection reason."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.core.samples import MAX_MESSAGE_BYTES, REASONS, Rejection, Sample, decode

TS = 1763899200  # 2025-11-23T12:00:00Z
NOW = float(TS)


def _msg(**fields: object) -> str:
    doc = {"service": "checkout", "ts": TS, "metrics": {"qps": 1520.0, "cpu": 0.55}}
    doc.update(fields)
    return json.dumps(doc)


def _without(name: str) -> str:
    doc = json.loads(_msg())
    del doc[name]
    return json.dumps(doc)


GOOD = {
    "int ts": (_msg(), TS, {"qps": 1520.0, "cpu": 0.55}, ()),
    "float ts": (_msg(ts=TS + 0.25), TS + 0.25, {"qps": 1520.0, "cpu": 0.55}, ()),
    "rfc3339 with Z": (_msg(ts="2025-11-23T12:00:00Z"), TS, {"qps": 1520.0, "cpu": 0.55}, ()),
    "rfc3339 with offset": (_msg(ts="2025-11-23T20:00:00+08:00"), TS,
                            {"qps": 1520.0, "cpu": 0.55}, ()),
    "rfc3339 fractional": (_msg(ts="2025-11-23T12:00:00.5Z"), TS + 0.5,
                           {"qps": 1520.0, "cpu": 0.55}, ()),
    "extra keys ignored": (_msg(host="web-1", labels={"zone": "a"}), TS,
                           {"qps": 1520.0, "cpu": 0.55}, ()),
    "int metric becomes float": (_msg(metrics={"qps": 7}), TS, {"qps": 7.0}, ()),
    "null metric is a gap": (_msg(metrics={"qps": 1.0, "cpu": None}), TS, {"qps": 1.0}, ("cpu",)),
    # json.dumps writes the NaN / -Infinity literals that Python's json (and many producers) use
    "NaN metric is a gap": (_msg(metrics={"qps": 1.0, "cpu": math.nan}), TS, {"qps": 1.0}, ("cpu",)),
    "Infinity metric is a gap": (_msg(metrics={"qps": 1.0, "cpu": -math.inf}), TS, {"qps": 1.0},
                                 ("cpu",)),
    "string metric is a gap": (_msg(metrics={"qps": 1.0, "cpu": "x"}), TS, {"qps": 1.0}, ("cpu",)),
    "bool metric is a gap": (_msg(metrics={"qps": 1.0, "up": True}), TS, {"qps": 1.0}, ("up",)),
    "huge int metric is a gap": (_msg(metrics={"qps": 1.0, "cpu": 10**400}), TS, {"qps": 1.0},
                                 ("cpu",)),
    "bytes input": (_msg().encode(), TS, {"qps": 1520.0, "cpu": 0.55}, ()),
    "non-ascii service": (_msg(service="秒杀-checkout").encode(), TS,
                          {"qps": 1520.0, "cpu": 0.55}, ()),
}


@pytest.mark.parametrize(("raw", "ts", "metrics", "gaps"), GOOD.values(), ids=GOOD.keys())
def test_good_message_decodes_to_a_sample(raw: str | bytes, ts: float, metrics: dict,
                                          gaps: tuple[str, ...]) -> None:
    sample = decode(raw, now=NOW)

    assert isinstance(sample, Sample), sample
    assert sample.ts == ts
    assert dict(sample.metrics) == metrics
    assert all(type(v) is float for v in sample.metrics.values())
    assert sample.gaps == gaps


def test_good_message_keeps_the_service_name() -> None:
    sample = decode(_msg(service="秒杀-checkout").encode())

    assert isinstance(sample, Sample) and sample.service == "秒杀-checkout"


BAD = {
    "malformed json": ('{"service": "checkout", "ts": ', "malformed_json"),
    "empty message": (b"", "malformed_json"),
    "non-utf8 bytes": (b'{"service": "\xff\xfe\xfd", "ts": 1, "metrics": {}}', "malformed_json"),
    "array top level": ("[1, 2, 3]", "not_an_object"),
    "string top level": ('"checkout"', "not_an_object"),
    "null top level": ("null", "not_an_object"),
    "missing service": (_without("service"), "missing_field"),
    "missing ts": (_without("ts"), "missing_field"),
    "missing metrics": (_without("metrics"), "missing_field"),
    "empty service": (_msg(service=""), "invalid_service"),
    "blank service": (_msg(service="   "), "invalid_service"),
    "service not a string": (_msg(service=42), "invalid_service"),
    "service too long": (_msg(service="s" * 201), "invalid_service"),
    "bool ts": (_msg(ts=True), "invalid_ts"),
    "null ts": (_msg(ts=None), "invalid_ts"),
    "ts without timezone": (_msg(ts="2025-11-23T12:00:00"), "invalid_ts"),
    "ts not a date": (_msg(ts="yesterday"), "invalid_ts"),
    "ts a list": (_msg(ts=[TS]), "invalid_ts"),
    "ts infinite": ('{"service": "a", "ts": Infinity, "metrics": {"qps": 1}}', "invalid_ts"),
    "ts in milliseconds": (_msg(ts=TS * 1000), "ts_out_of_range"),
    "ts huge int": (_msg(ts=10**400), "ts_out_of_range"),
    "ts of 5,000 digits (beyond int())": ('{"service": "a", "ts": ' + "9" * 5000
                                          + ', "metrics": {"qps": 1}}', "ts_out_of_range"),
    "service with a lone surrogate": ('{"service": "sur\\ud800", "ts": 1763899200, '
                                      '"metrics": {"qps": 1}}', "invalid_service"),
    "service with utf-8-encoded surrogate": (b'{"service": "sur\xed\xa0\x80", "ts": 1763899200, '
                                             b'"metrics": {"qps": 1}}', "malformed_json"),
    "service with a control character": (_msg(service="cart\x07"), "invalid_service"),
    "service with a newline": (_msg(service="cart\nx"), "invalid_service"),
    "service with a bidi override": (_msg(service="cart\u202e"), "invalid_service"),
    "service with a line separator": (_msg(service="a\u2028b"), "invalid_service"),
    "service with invalid utf-8": (b'{"service": "gate\xff\xfeway", "ts": 1763899200, '
                                   b'"metrics": {"qps": 1}}', "malformed_json"),
    "negative ts": (_msg(ts=-TS), "ts_out_of_range"),
    "ts before 2000": (_msg(ts="1999-12-31T23:59:59Z"), "ts_out_of_range"),
    "future ts": (_msg(ts=TS + 301), "future_ts"),
    "metrics a list": (_msg(metrics=[1.0, 2.0]), "invalid_metrics"),
    "metrics a number": (_msg(metrics=3.0), "invalid_metrics"),
    "too many metrics": (_msg(metrics={f"m{i}": 1.0 for i in range(257)}), "invalid_metrics"),
    "empty metrics": (_msg(metrics={}), "no_valid_metrics"),
    "all metrics non-finite": (_msg(metrics={"qps": math.nan, "cpu": math.inf, "p99": None}),
                               "no_valid_metrics"),
    "too large bytes": (_msg(pad="x" * MAX_MESSAGE_BYTES).encode(), "too_large"),
    "too large text, counted in utf-8 bytes": (_msg(pad="秒" * 30_000), "too_large"),
}


@pytest.mark.parametrize(("raw", "reason"), BAD.values(), ids=BAD.keys())
def test_bad_message_is_rejected_with_its_reason(raw: str | bytes, reason: str) -> None:
    rejection = decode(raw, now=NOW)

    assert isinstance(rejection, Rejection), rejection
    assert rejection.reason == reason
    assert rejection.detail


def test_every_rejection_reason_has_a_case() -> None:
    assert {reason for _raw, reason in BAD.values()} == set(REASONS)


@pytest.mark.parametrize(("ahead_seconds", "accepted"), [(0, True), (300, True), (300.5, False)])
def test_future_ts_is_allowed_up_to_max_future_seconds(ahead_seconds: float, accepted: bool) -> None:
    result = decode(_msg(ts=TS + ahead_seconds), now=NOW, max_future_seconds=300)

    assert isinstance(result, Sample) is accepted


def test_future_ts_is_not_checked_without_now() -> None:
    assert isinstance(decode(_msg(ts=TS + 86400)), Sample)


def test_message_just_under_the_size_limit_is_decoded() -> None:
    raw = _msg(pad="")
    raw = _msg(pad="x" * (MAX_MESSAGE_BYTES - len(raw)))

    assert len(raw.encode()) == MAX_MESSAGE_BYTES
    assert isinstance(decode(raw), Sample)


_json_leaf = (st.none() | st.booleans() | st.integers() | st.integers(-(10**500), 10**500)
              | st.floats() | st.text(max_size=30))
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=30,
)
_ts = (st.integers(-(10**20), 10**20) | st.floats() | st.datetimes().map(lambda d: d.isoformat())
       | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | _json)
_sample_like = st.fixed_dictionaries(
    {"service": st.text(max_size=20) | _json, "ts": _ts,
     "metrics": st.dictionaries(st.text(max_size=10), _json_leaf, max_size=6) | _json},
    optional={"extra": _json},
)


def _check_decoded(result: Sample | Rejection) -> None:
    if isinstance(result, Rejection):
        assert result.reason in REASONS
    else:
        assert isinstance(result, Sample)
        assert result.metrics
        assert all(type(v) is float and math.isfinite(v) for v in result.metrics.values())
        assert math.isfinite(result.ts)
        assert not set(result.gaps) & set(result.metrics)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _check_decoded(decode(raw, now=NOW))


@settings(max_examples=500, deadline=None)
@given(_json | _sample_like)
def test_arbitrary_json_never_raises_and_samples_are_finite(doc: object) -> None:
    raw = json.dumps(doc)  # NaN and Infinity become the literals Python's json accepts

    _check_decoded(decode(raw, now=NOW))
    _check_decoded(decode(raw.encode("utf-8", "surrogatepass"), now=NOW))


def test_a_5000_digit_metric_value_is_a_gap_not_malformed_json() -> None:
    sample = decode('{"service": "a", "ts": 1763899200, "metrics": {"qps": ' + "9" * 5000
                    + ', "cpu": 0.5}}')

    assert isinstance(sample, Sample) and sample.gaps == ("qps",) and dict(sample.metrics) == {"cpu": 0.5}


def test_every_accepted_service_name_is_writable_as_utf8_and_has_no_control_character() -> None:
    names = ["秒杀-checkout", "a b", "x" * 200, "emoji-\U0001F600"]
    for name in names:
        sample = decode(_msg(service=name).encode())
        assert isinstance(sample, Sample), (name, sample)
        sample.service.encode("utf-8")


def test_a_rejection_detail_is_ascii_and_bounded() -> None:
    rejection = decode(_msg(service="\x00" * 150 + "\ud800"))

    assert isinstance(rejection, Rejection) and rejection.reason == "invalid_service"
    assert rejection.detail.isascii() and len(rejection.detail) < 300
