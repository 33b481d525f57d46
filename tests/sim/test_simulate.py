"""The flash-sale simulator: deterministic, contract-shaped, defective like a real stream,
and with failures that are worth predicting (inside and outside sales, with a build-up)."""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict

import numpy as np
import pytest
from kafka import KafkaConsumer

from sentinel.errors import SentinelError
from sentinel.sim.simulate import DEFAULT_START_TS, Simulation, produce_kafka, profiles, simulate, write_jsonl
from tests.testkit.broker import FAST_GROUP, TansuBroker

STEP = 10
METRICS = ("qps", "p99_ms", "error_rate", "cpu")


@pytest.fixture(scope="module")
def two_days() -> Simulation:
    return simulate(services=6, days=2, seed=2)


def per_step(sim: Simulation) -> dict[str, dict[str, np.ndarray]]:
    """service -> metric -> values on the 10 s grid (last sample of a step wins, NaN = gap)."""
    n = round(sim.summary["days"] * 86400 / STEP)
    grid: dict[str, dict[str, np.ndarray]] = defaultdict(
        lambda: {m: np.full(n, np.nan) for m in METRICS})
    for sample in sim.samples:
        step = int((sample["ts"] - DEFAULT_START_TS) // STEP)
        for name, value in sample["metrics"].items():
            grid[sample["service"]][name][step] = value
    return grid


def failure_starts(series: dict[str, np.ndarray]) -> list[int]:
    """The default rule: error_rate >= 0.05 or p99_ms >= 2000 for 30 s; a gap keeps the state."""
    known = ~np.isnan(series["error_rate"]) | ~np.isnan(series["p99_ms"])
    holds = (np.nan_to_num(series["error_rate"]) >= 0.05) | (np.nan_to_num(series["p99_ms"])
                                                             >= 2000)
    last_known = np.maximum.accumulate(np.where(known, np.arange(len(known)), 0))
    failing = holds[last_known]
    starts, run = [], 0
    for step, bad in enumerate(failing.tolist()):
        run = run + 1 if bad else 0
        if run == 3:
            starts.append(step - 2)
    return starts


def test_same_seed_gives_identical_output_and_another_seed_does_not(tmp_path):
    first, again, other = (simulate(3, 0.25, seed) for seed in (5, 5, 6))
    assert first.samples == again.samples and first.summary == again.summary
    write_jsonl(first.samples, tmp_path / "a.jsonl")
    write_jsonl(again.samples, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert first.samples != other.samples


def test_every_sample_matches_the_contract(two_days):
    end_ts = DEFAULT_START_TS + 2 * 86400
    for sample in two_days.samples:
        assert set(sample) == {"service", "ts", "metrics"}
        assert isinstance(sample["service"], str) and sample["service"]
        assert isinstance(sample["ts"], int | float) and not isinstance(sample["ts"], bool)
        assert DEFAULT_START_TS <= sample["ts"] < end_ts
        assert sample["ts"] - math.floor(sample["ts"] / STEP) * STEP < 9.5  # jitter in the step
        assert set(sample["metrics"]) <= set(METRICS) and len(sample["metrics"]) >= 3
        for value in sample["metrics"].values():
            assert isinstance(value, float) and math.isfinite(value)
    assert two_days.summary["n_samples"] == len(two_days.samples)


def test_jsonl_is_one_compact_object_per_line(tmp_path, two_days):
    path = tmp_path / "sim.jsonl"
    assert write_jsonl(two_days.samples[:100], path) == 100
    lines = path.read_text().splitlines()
    assert len(lines) == 100 and " " not in lines[0]
    assert [json.loads(line) for line in lines] == two_days.samples[:100]


def test_services_differ_in_scale_by_more_than_30x(two_days):
    grid = per_step(two_days)
    peaks = {name: np.nanpercentile(series["qps"], 95) for name, series in grid.items()}
    assert list(grid) == ["gateway", "catalog", "cart", "checkout", "payment", "inventory"]
    assert max(peaks.values()) / min(peaks.values()) >= 30


def test_more_services_than_profiles_get_numbered_copies_with_their_own_deps():
    names = [p.name for p in profiles(10)]
    assert names[8:] == ["gateway-2", "catalog-2"]
    assert profiles(10)[8].deps == ("catalog-2",)
    assert profiles(3)[2].deps == ()  # cart's dependency, inventory, is not simulated


def test_stream_has_duplicates_late_samples_gaps_and_missing_metrics(two_days):
    samples = two_days.samples
    keys = Counter((s["service"], s["ts"]) for s in samples)
    duplicates = sum(count - 1 for count in keys.values())
    newest_step: dict[str, int] = {}
    late = 0
    for sample in samples:
        step = int(sample["ts"] // STEP)
        late += step < newest_step.get(sample["service"], step)
        newest_step[sample["service"]] = max(step, newest_step.get(sample["service"], step))
    steps_per_service = 2 * 8640
    present = Counter(s for s, _ in keys)
    missing_metric = sum(len(s["metrics"]) < len(METRICS) for s in samples)

    total = steps_per_service * len(present)
    assert 0.002 * total < duplicates < 0.01 * total
    assert 0.002 * total < late < 0.01 * total
    assert all(0.97 < count / steps_per_service < 0.995 for count in present.values())
    assert 0 < missing_metric < 0.01 * total
    defects = two_days.summary["defects"]
    assert defects["duplicated"] == duplicates and defects["gap_samples"] > 0


def test_failures_happen_inside_and_outside_sales_and_some_sales_pass(two_days):
    grid = per_step(two_days)
    sale_steps = [(s["start_ts"] - DEFAULT_START_TS) // STEP
                  for s in two_days.summary["sale_schedule"]]
    inside = outside = 0
    failed_pairs = set()
    for service, series in grid.items():
        for start in failure_starts(series):
            sales = [s for s in sale_steps if -60 <= start - s < 180]  # 10 min before to 30 after
            inside, outside = inside + bool(sales), outside + (not sales)
            failed_pairs.update((service, s) for s in sales)
    pairs = len(sale_steps) * len(grid)
    assert inside >= 1 and outside >= 1
    assert outside >= 0.3 * (inside + outside)
    assert len(failed_pairs) <= 0.35 * pairs  # a sale alone is not a failure
    assert 0.5 <= (inside + outside) / (len(grid) * 2) <= 2.0  # failures per service-day


def test_failures_have_a_visible_build_up_a_minute_before(two_days):
    grid = per_step(two_days)
    visible = total = 0
    for series in grid.values():
        normal_cpu, normal_p99 = np.nanmedian(series["cpu"]), np.nanmedian(series["p99_ms"])
        for start in failure_starts(series):
            before = slice(start - 9, start - 5)  # 50-90 s before the failure starts
            with np.errstate(all="ignore"):
                cpu_high = np.nanmax(series["cpu"][before]) >= normal_cpu + 0.2
                p99_high = np.nanmax(series["p99_ms"][before]) >= 1.5 * normal_p99
            visible += bool(cpu_high or p99_high)
            total += 1
    assert total and visible >= 0.8 * total


def test_simulate_rejects_nonsense_arguments():
    with pytest.raises(SentinelError, match="services >= 1"):
        simulate(0, 1, 1)
    with pytest.raises(SentinelError, match="days > 0"):
        simulate(3, 0, 1)


def consume(broker: TansuBroker, topic: str, expected: int, deadline_s: float = 30.0) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id="test",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             **FAST_GROUP)
    records: list = []
    try:
        deadline = time.monotonic() + deadline_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_produce_kafka_sends_every_sample_keyed_by_service(kafka_broker):
    sim = simulate(3, 0.02, seed=3)
    kafka_broker.create_topic("sentinel.metrics", partitions=3)
    progress: list[int] = []

    sent = produce_kafka(sim.samples, kafka_broker.bootstrap, "sentinel.metrics",
                         on_progress=progress.append)

    assert sent == len(sim.samples) and progress[-1] == sent
    records = consume(kafka_broker, "sentinel.metrics", sent)
    assert len(records) == sent
    assert {r.key.decode() for r in records} == {"gateway", "catalog", "cart"}
    assert all(json.loads(r.value)["service"] == r.key.decode() for r in records)
    by_partition = defaultdict(set)
    for record in records:
        by_partition[record.partition].add(record.key)
    assert all(len(keys) >= 1 for keys in by_partition.values())
    received = sorted(json.dumps(json.loads(r.value), sort_keys=True) for r in records)
    assert received == sorted(json.dumps(s, sort_keys=True) for s in sim.samples)


def test_produce_kafka_paces_on_event_time(kafka_broker):
    samples = [{"service": "checkout", "ts": DEFAULT_START_TS + 10 * i,
                "metrics": {"qps": 1.0}} for i in range(7)]  # 60 s of event time
    started = time.monotonic()

    sent = produce_kafka(samples, kafka_broker.bootstrap, "paced", speed=100.0)

    assert sent == 7
    assert 0.55 <= time.monotonic() - started < 5.0


def test_calendar_out_holds_the_announced_sales_and_the_summary_names_the_rest(tmp_path):
    from sentinel.cli import main
    from sentinel.config.calendar_file import read_calendar

    out, calendar = tmp_path / "day.jsonl", tmp_path / "sales.yaml"
    assert main(["simulate", "--services", "2", "--days", "3", "--seed", "4", "--out", str(out),
                 "--calendar-out", str(calendar)]) == 0
    summary = simulate(2, 3, 4).summary
    events = read_calendar(calendar)
    announced = [s["start_ts"] for s in summary["sale_schedule"] if s["announced"]]
    assert [e.start_ts for e in events] == announced
    assert 0 < len(announced) == summary["sales_announced"] < summary["sales"]
    assert all(e.services is None and e.end_ts > e.start_ts + 600 for e in events)


@pytest.mark.parametrize("name", ["topology.yaml", "topology.json"])
def test_topology_out_writes_a_topology_file_the_config_reads(tmp_path, name, capsys):
    from sentinel.cli import main
    from sentinel.config.load import effective_topology, parse_config

    path = tmp_path / name
    assert main(["simulate", "--services", "8", "--days", "0.01", "--seed", "1",
                 "--out", str(tmp_path / "s.jsonl"), "--topology-out", str(path)]) == 0
    capsys.readouterr()
    config = parse_config({"step": "10s", "window": "40s", "horizon": "20s",
                           "features": [{"name": "qps"}],
                           "failure": {"any": [{"metric": "qps", "op": ">=", "value": 1}]},
                           "topology_file": str(path)})
    topology = effective_topology(config)
    assert topology.dependencies("checkout") == ("payment", "inventory")
    assert topology.dependencies("gateway") == ("catalog",)
    assert {caller for caller, _ in topology.edges} == {
        p.name for p in profiles(8) if p.deps}
