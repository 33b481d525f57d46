"""Assembling foreign points into samples: counters, histograms, several series, gaps."""

from __future__ import annotations

import math

import pytest

from sentinel.config.load import parse_config
from sentinel.config.schema import MappedMetric, SourceSpec
from sentinel.core.samples import Sample
from sentinel.ingest.assemble import Assembler, bucket_quantile, mappings
from sentinel.ingest.points import Point

T0 = 1763899200


def assembler(*sources: tuple[str, SourceSpec], lateness: float = 0.0) -> Assembler:
    return Assembler([MappedMetric(name, src) for name, src in sources], "job", 10, lateness)


def run(asm: Assembler, points: list[Point]) -> list[Sample]:
    out = []
    for point in points:
        asm.add([point])
        out += asm.close_ready()
    return out + asm.flush()


def p(metric: str, ts: float, value: float, **labels: str) -> Point:
    return Point(metric, {"job": "checkout", **labels}, float(ts), value)


def test_counter_becomes_a_per_second_rate_and_a_reset_counts_from_zero():
    asm = assembler(("qps", SourceSpec(metric="reqs", counter=True)))
    values = [100, 200, 400, 50, 150]  # a restart between 400 and 50
    samples = run(asm, [p("reqs", T0 + 10 * i, v) for i, v in enumerate(values)])
    assert [(s.ts, s.metrics["qps"]) for s in samples] == [
        (T0 + 10.0, 10.0), (T0 + 20.0, 20.0), (T0 + 30.0, 5.0), (T0 + 40.0, 10.0)]


def test_several_series_per_feature_are_combined_by_the_aggregation():
    points = [p("cpu", T0, v, instance=str(i)) for i, v in enumerate([0.2, 0.6, 0.4])]
    points.append(p("cpu", T0 + 10, 0.1, instance="0"))
    for how, expected in [("sum", 1.2), ("max", 0.6), ("mean", 0.4)]:
        asm = assembler(("cpu", SourceSpec(metric="cpu", aggregate=how)))
        assert run(asm, points)[0].metrics["cpu"] == pytest.approx(expected)


def test_label_matchers_select_series_like_prometheus_regex_matchers():
    asm = assembler(("errors", SourceSpec(metric="reqs", counter=True, match=(("code", "5.."),))),
                    ("all", SourceSpec(metric="reqs", counter=True)))
    points = []
    for i in range(2):
        points += [p("reqs", T0 + 10 * i, 100 + 50 * i, code="200"),
                   p("reqs", T0 + 10 * i, 10 + 10 * i, code="503"),
                   p("reqs", T0 + 10 * i, 5 + 10 * i, code="504"),
                   p("reqs", T0 + 10 * i, 1000)]  # no code label: "" matches only the catch-all
    [sample] = run(asm, points)
    assert sample.metrics == {"errors": 2.0, "all": 7.0}


def test_histogram_quantile_from_bucket_increases_over_the_step_summed_across_series():
    asm = assembler(("p99_ms", SourceSpec(metric="lat", histogram_quantile=0.5, scale=1000)))
    before = {"0.1": 0, "0.5": 0, "+Inf": 0}
    after = {"0.1": 50, "0.5": 90, "+Inf": 100}  # half of the step's requests under 100 ms
    points = []
    for pod in ("a", "b"):
        points += [p("lat_bucket", T0, v, le=le, pod=pod) for le, v in before.items()]
        points += [p("lat_bucket", T0 + 10, v, le=le, pod=pod) for le, v in after.items()]
    [sample] = run(asm, points)
    assert sample.metrics["p99_ms"] == pytest.approx(100.0)


@pytest.mark.parametrize("q, buckets, expected", [
    (0.5, [(0.1, 50.0), (0.5, 100.0), (math.inf, 100.0)], 0.1),
    (0.75, [(0.1, 50.0), (0.5, 100.0), (math.inf, 100.0)], 0.3),
    (0.99, [(0.1, 50.0), (0.5, 90.0), (math.inf, 100.0)], 0.5),  # in +Inf: the highest bound
    (0.5, [(0.1, 0.0), (math.inf, 0.0)], None),  # no observations in the step: a gap
    (0.5, [(0.1, 3.0)], None),  # no +Inf bucket
])
def test_bucket_quantile_interpolates_like_prometheus(q, buckets, expected):
    assert bucket_quantile(q, buckets) == (None if expected is None else pytest.approx(expected))


def test_nan_staleness_is_a_gap_and_no_rate_is_measured_across_it():
    asm = assembler(("qps", SourceSpec(metric="reqs", counter=True)),
                    ("cpu", SourceSpec(metric="cpu")))
    points = [p("reqs", T0, 100), p("cpu", T0, 0.5), p("reqs", T0 + 10, 200), p("cpu", T0 + 10, math.nan),
              p("reqs", T0 + 20, math.nan), p("cpu", T0 + 20, 0.7),
              p("reqs", T0 + 30, 900), p("reqs", T0 + 40, 1000), p("cpu", T0 + 40, 0.1)]
    samples = run(asm, points)
    assert [(s.ts - T0, dict(s.metrics)) for s in samples] == [
        (0.0, {"cpu": 0.5}), (10.0, {"qps": 10.0}), (20.0, {"cpu": 0.7}), (40.0, {"qps": 10.0, "cpu": 0.1})]


def test_points_without_the_service_label_or_mapping_are_counted_not_assembled():
    asm = assembler(("cpu", SourceSpec(metric="cpu")))
    counts = asm.add([Point("cpu", {"instance": "x"}, T0, 0.5), Point("cpu", {"job": ""}, T0, 0.5),
                      p("mem", T0, 1.0), p("cpu", T0, 0.25)])
    assert (counts.no_service, counts.unmapped, counts.accepted) == (2, 1, 1)
    assert asm.flush() == [Sample("checkout", float(T0), {"cpu": 0.25})]


def test_a_point_for_an_emitted_step_is_late_and_lateness_holds_steps_open():
    asm = assembler(("cpu", SourceSpec(metric="cpu")), lateness=10)
    asm.add([p("cpu", T0, 0.5), p("cpu", T0 + 15, 0.6)])
    assert asm.close_ready() == []  # T0's step ends at T0 + 10; the watermark less 10 s is T0 + 5
    asm.add([p("cpu", T0 + 20, 0.7)])
    assert [s.ts for s in asm.close_ready()] == [T0]
    assert asm.add([p("cpu", T0 + 5, 0.1)]).late == 1


def test_pending_offsets_hold_the_commit_at_the_oldest_point_still_in_an_open_step():
    asm = assembler(("cpu", SourceSpec(metric="cpu")))
    asm.add([p("cpu", T0, 0.5)], origin=(0, 7))
    asm.add([p("cpu", T0 + 1, 0.5)], origin=(0, 8))
    asm.add([p("cpu", T0 + 2, 0.5, job="cart")], origin=(1, 3))
    assert asm.pending_offsets() == {0: 7, 1: 3}
    asm.add([p("cpu", T0 + 10, 0.5)], origin=(0, 9))
    asm.close_ready()
    assert asm.pending_offsets() == {0: 9, 1: 3}


def test_mappings_read_unmapped_features_by_their_own_name_and_skip_promql_only_sources():
    config = parse_config({
        "step": "10s", "window": "1m", "horizon": "1m",
        "features": [{"name": "qps", "source": {"metric": "reqs", "counter": True}},
                     {"name": "cpu"}, {"name": "p99", "source": {"promql": "histogram_quantile(...)"}}],
        "failure": {"any": [{"metric": "errors", "op": ">", "value": 1}]},
        "input": {"format": "prometheus-kafka-adapter",
                  "metrics": [{"name": "errors", "source": {"metric": "errs"}}]}})
    assert [(m.name, m.source.metric) for m in mappings(config)] == [
        ("qps", "reqs"), ("cpu", "cpu"), ("errors", "errs")]
