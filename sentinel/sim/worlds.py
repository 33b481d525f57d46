"""Domain-randomised worlds: every seed draws a different estate of services to monitor.

Usage::

    world = draw_world(3)
    sim = simulate_world(world, days=2)        # sim.samples: sample-contract dicts
    world_config(world)                        # step, window, horizon, features, failure
    write_world(3, Path("out/w3"), train_days=4, test_days=2)

or ``python -m sentinel.sim.worlds --seed 3 --train-days 4 --test-days 2 --out-dir out/w3``.

Why: a model and its defaults tuned on one simulator learn that simulator. Here each seed
draws its own metric names and units, step, services and scales (10 to 100,000 qps), noise,
daily and weekly shape, promotions (some harmless, some overloading), failure mechanisms
(half with a precursor, some abrupt, cascades along a dependency topology), data defects and
a failure rule written on its own metric names. Nothing here may be read by a default.

Truth is built first and the rule's metrics are made to agree with it: on failing steps the
metrics the rule reads are pushed past its thresholds, elsewhere they are softly held below
(except single-step blips, shorter than the rule's `for`). Depends on numpy and pyyaml only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

DEFAULT_START_TS = 1767225600  # 2026-01-01 00:00 UTC
DAY_SECONDS = 86400
MECHANISMS = ("overload", "slow_leak", "cascade", "bad_deploy", "pool_exhaustion", "gc_thrash", "crash")
LATENCY_FIRST = ("overload", "slow_leak", "pool_exhaustion", "gc_thrash")  # the rest: errors first
_NOMINAL_LATENCY_MS, _NOMINAL_ERROR_RATIO = 2000.0, 0.05  # for worlds whose rule reads neither

# kind -> [(name, scale: world units per latent unit)]; latent units: qps, ms, ratio, fraction
_NAMES: dict[str, list[tuple[str, float]]] = {
    "traffic": [("qps", 1), ("rps", 1), ("requests_per_sec", 1), ("requests_per_min", 60),
                ("req_rate", 1), ("throughput_rpm", 60), ("http_rps", 1)],
    "latency_p99": [("p99_ms", 1), ("latency_p99_ms", 1), ("p99_latency_seconds", 0.001),
                    ("lat_p99_s", 0.001), ("response_time_p99_ms", 1), ("p99_us", 1000)],
    "latency_p50": [("p50_ms", 1), ("latency_median_s", 0.001), ("lat_p50_ms", 1)],
    "error_ratio": [("error_rate", 1), ("error_ratio", 1), ("err_frac", 1), ("errors_pct", 100),
                    ("http_5xx_ratio", 1)],
    "error_count": [("errors_per_sec", 1), ("err_rps", 1), ("5xx_per_min", 60)],
    "availability": [("success_ratio", 1), ("availability", 1), ("ok_pct", 100)],
    "cpu": [("cpu", 1), ("cpu_util", 1), ("cpu_percent", 100), ("cpu_usage_pct", 100),
            ("container_cpu_ratio", 1)],
    "queue_depth": [("queue_depth", 1), ("inflight_requests", 1), ("backlog", 1)],
    "pool": [("conn_pool_used", 1), ("db_pool_active", 1), ("pool_utilization", 1)],
    "gc_pause": [("gc_pause_ms", 1), ("gc_pause_seconds", 0.001), ("jvm_gc_ms", 1)],
    "cache_hit": [("cache_hit_ratio", 1), ("cache_hit_pct", 100)],
    "load1": [("load1", 1), ("node_load1", 1)],
    "mem": [("mem_used_bytes", 1), ("mem_used_mb", 1), ("heap_used_ratio", 1), ("rss_gib", 1)],
    "disk_io": [("disk_io", 1), ("disk_write_mbps", 1), ("iops", 1)],
    "threads": [("threads_busy", 1), ("worker_threads_active", 1)],
    "noise_walk": [("ntp_offset_ms", 1), ("cron_lag_s", 1), ("tmp_files", 1)],
    "noise_cron": [("batch_jobs", 1), ("log_lines_per_s", 1), ("backup_mbps", 1)],
    "noise_white": [("temp_celsius", 1), ("fan_rpm", 1), ("dns_ms", 1)],
    "requests_counter": [("requests_total", 1), ("http_requests_total", 1)],
    "flag": [("incident", 1), ("is_down", 1), ("outage", 1), ("health_failed", 1)],
}
_EXTRAS = ("latency_p50", "queue_depth", "pool", "gc_pause", "cache_hit", "threads")
_HOST = ("load1", "mem", "disk_io")
_NOISE = ("noise_walk", "noise_cron", "noise_white")
_SERVICE_NAMES = ("gateway", "checkout", "payment", "cart", "inventory", "catalog", "search", "auth",
                  "user", "order", "shipping", "pricing", "recommend", "review", "coupon", "notify",
                  "session", "media", "ledger", "fraud")
_NAME_STYLES = ("{}", "{}-svc", "svc-{}", "{}_api", "prod/{}", "{}.shop.internal")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # a key of _NAMES: what the metric measures
    scale: float  # world units per latent unit (e.g. 0.001 for a latency in seconds)
    feature: bool = True  # an incident flag is never a model input


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    scale_qps: float  # demand at the daily peak of a normal day
    headroom: float  # capacity / scale_qps
    base_latency_ms: float
    base_error_ratio: float
    promo_sensitivity: float  # share of a promotion's multiplier this service feels
    cpu_at_capacity: float
    mem_limit_bytes: float
    pool_size: int


@dataclass(frozen=True)
class RuleCondition:
    metric: str
    op: str
    value: float


@dataclass(frozen=True)
class World:
    seed: int
    step_seconds: int
    window_seconds: int
    horizon_seconds: int
    services: tuple[ServiceSpec, ...]
    topology: tuple[tuple[str, tuple[str, ...]], ...]  # caller -> its dependencies
    metrics: tuple[MetricSpec, ...]
    rule_mode: str  # "any" | "all"
    rule: tuple[RuleCondition, ...]
    rule_for_seconds: int
    noise: float  # sigma of the slow multiplicative demand noise
    peak_hours: tuple[float, float]
    night_floor: float  # demand at night / at the daily peak
    weekend_factor: float  # 1.0: no weekly effect
    promos_per_day: float
    promo_size: tuple[float, float]  # demand multiplier range at the peak of a promotion
    overload_share: float  # chance a promotion overloads a sensitive service
    failures_per_service_day: float  # scripted roots (overloads and cascades come on top)
    mechanism_weights: tuple[tuple[str, float], ...]
    cascade_probability: float
    near_misses_per_service_day: float  # precursors that recover on their own
    blips_per_service_day: float  # single-step rule violations (shorter than `for`)
    defects: tuple[tuple[str, float], ...]  # defect -> rate per sample (outages: per day)

    def to_json(self) -> str:
        doc = asdict(self)
        doc["topology"] = {caller: list(deps) for caller, deps in self.topology}
        doc["mechanism_weights"] = dict(self.mechanism_weights)
        doc["defects"] = dict(self.defects)
        doc["config"] = world_config(self)
        return json.dumps(doc, indent=1)

    def metric(self, kind: str) -> MetricSpec | None:
        return next((m for m in self.metrics if m.kind == kind), None)


@dataclass(frozen=True)
class Episode:
    service: str
    start_ts: int  # first failing step
    end_ts: int  # last failing step
    mechanism: str
    precursor_seconds: int  # how long before start_ts the cause is visible (0: abrupt)


@dataclass
class Simulated:
    samples: list[dict] = field(default_factory=list)
    truth: list[Episode] = field(default_factory=list)
    # the promotions as calendar events, `announced` false for the unannounced ones
    calendar: list[dict] = field(default_factory=list)


UNANNOUNCED_SHARE = 0.25  # promotions nobody put in the sale calendar


def _calendar(world: World, grid: _Grid, promos: list, seed_offset: int) -> list[dict]:
    """Each promotion as the event operators would have planned (its first step to the end of
    its hold, every service, its peak multiplier), a quarter of them unannounced; drawn from
    a generator of its own, so the samples do not change."""
    rng = np.random.default_rng(np.random.SeedSequence([world.seed, seed_offset, 0xCA1]))
    events = []
    for first, peak, profile, size in promos:
        start = grid.ts0 + first * grid.step
        hold = int(np.count_nonzero(profile >= 0.5))
        events.append({"name": f"promo-{start}", "start": int(start),
                       "end": int(start + max(peak - first + 1, hold) * grid.step),
                       "services": "all", "multiplier": round(float(size), 1),
                       "announced": bool(rng.random() >= UNANNOUNCED_SHARE)})
    return events


# ---------------------------------------------------------------------------- drawing a world

def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _pick(rng: np.random.Generator, options: list | tuple) -> object:
    return options[int(rng.integers(len(options)))]


def draw_world(seed: int) -> World:
    """A world from `seed` alone (same seed, same world)."""
    rng = np.random.default_rng([seed, 0x5EED])
    step = int(_pick(rng, (10, 15, 30, 60)))
    lo_steps, hi_steps = {10: (30, 60), 15: (20, 40), 30: (20, 30), 60: (20, 30)}[step]
    window = step * int(rng.integers(lo_steps, hi_steps + 1))
    horizon = 300 if step < 60 else int(_pick(rng, (300, 600)))

    n_services = int(rng.integers(4, 13))
    style = str(_pick(rng, _NAME_STYLES))
    if rng.random() < 0.2:  # host-flavoured estates name machines, not services
        prefix = _pick(rng, ("web", "node", "host", "db"))
        names = [f"{prefix}-{i:02d}" for i in rng.permutation(40)[:n_services]]
    else:
        names = [style.format(_SERVICE_NAMES[i]) for i in rng.permutation(len(_SERVICE_NAMES))[:n_services]]
    lo_qps = _log_uniform(rng, 10, 1000)
    hi_qps = min(100_000.0, lo_qps * _log_uniform(rng, 10, 1000))
    services = tuple(ServiceSpec(
        name=name, scale_qps=round(_log_uniform(rng, lo_qps, hi_qps), 1),
        headroom=round(float(rng.uniform(1.45, 2.6)), 3),
        base_latency_ms=round(_log_uniform(rng, 15, 300), 1),
        base_error_ratio=round(_log_uniform(rng, 1e-4, 4e-3), 6),
        promo_sensitivity=round(float(rng.uniform(0.05, 1.0)), 3),
        cpu_at_capacity=round(float(rng.uniform(0.8, 0.95)), 3),
        mem_limit_bytes=float(2 ** int(rng.integers(30, 35))),
        pool_size=int(_pick(rng, (20, 50, 100, 200))),
    ) for name in names)
    # a DAG: a service may only call services listed after it
    topology = tuple((services[i].name, tuple(
        services[j].name for j in sorted(rng.choice(np.arange(i + 1, n_services),
                                                    size=min(n_services - i - 1, int(rng.integers(0, 4))),
                                                    replace=False).tolist())))
        for i in range(n_services - 1))
    topology = tuple((caller, deps) for caller, deps in topology if deps)

    metrics = _draw_metrics(rng)
    rule_mode, rule, metrics = _draw_rule(rng, metrics)
    for_seconds = int(_pick(rng, {10: (30, 60), 15: (30, 45, 60), 30: (60, 90), 60: (120, 180)}[step]))

    weights = {"slow_leak": rng.uniform(0.5, 2), "bad_deploy": rng.uniform(0.5, 2),
               "gc_thrash": rng.uniform(0.2, 1.5), "crash": rng.uniform(0.3, 1.5)}
    if any(m.kind == "pool" for m in metrics):
        weights["pool_exhaustion"] = rng.uniform(0.5, 2)
    total = sum(weights.values())
    peak = float(rng.uniform(9, 21))
    defects = {"gap": rng.uniform(0.002, 0.02), "outage_per_day": rng.uniform(0, 3),
               "duplicate": rng.uniform(0.001, 0.01), "late": rng.uniform(0.002, 0.01),
               "absent_metric": rng.uniform(0.001, 0.005), "null_metric": rng.uniform(0, 0.002),
               "outlier": rng.uniform(0.0005, 0.002), "counter_reset_per_day": rng.uniform(0, 1)}
    return World(
        seed=seed, step_seconds=step, window_seconds=window, horizon_seconds=horizon,
        services=services, topology=topology, metrics=metrics, rule_mode=rule_mode, rule=rule,
        rule_for_seconds=for_seconds, noise=round(float(rng.uniform(0.02, 0.12)), 3),
        peak_hours=(round(peak, 2), round((peak + rng.uniform(3, 9)) % 24, 2)),
        night_floor=round(float(rng.uniform(0.08, 0.6)), 3),
        weekend_factor=round(float(rng.uniform(0.6, 1.4)) if rng.random() < 0.6 else 1.0, 3),
        promos_per_day=round(float(rng.uniform(0.5, 4)), 2),
        promo_size=(2.0, round(float(rng.uniform(5, 20)), 1)),
        overload_share=round(float(rng.uniform(0.15, 0.5)), 3),
        failures_per_service_day=round(float(rng.uniform(0.5, 1.6)), 2),
        mechanism_weights=tuple((k, round(float(v / total), 3)) for k, v in sorted(weights.items())),
        cascade_probability=round(float(rng.uniform(0.2, 0.6)), 2),
        near_misses_per_service_day=round(float(rng.uniform(0.3, 1.5)), 2),
        blips_per_service_day=round(float(rng.uniform(0, 2)), 2),
        defects=tuple((k, round(float(v), 5)) for k, v in defects.items()),
    )


def _draw_metrics(rng: np.random.Generator) -> tuple[MetricSpec, ...]:
    kinds = ["traffic", "latency_p99", "error_ratio" if rng.random() < 0.7 else "error_count", "cpu"]
    if kinds[2] == "error_count" or rng.random() < 0.25:
        kinds.append("availability")
    kinds += [k for k in _EXTRAS if rng.random() < 0.45]
    kinds += [k for k in _HOST if rng.random() < 0.4]
    kinds += list(rng.choice(_NOISE, size=int(rng.integers(1, 3)), replace=False))
    if rng.random() < 0.35:
        kinds.append("requests_counter")
    specs = []
    for kind in kinds:
        name, scale = _pick(rng, _NAMES[kind])
        if kind == "pool" and name != "pool_utilization":
            scale = -1.0  # a count of connections: scaled by each service's pool size
        if kind == "mem":
            # negative: a unit of each service's memory limit (bytes, MiB, GiB)
            scale = {"mem_used_bytes": -1.0, "mem_used_mb": -2.0, "heap_used_ratio": 1.0,
                     "rss_gib": -3.0}[name]
        specs.append(MetricSpec(str(name), kind, float(scale)))
    order = rng.permutation(len(specs))  # no world lists its metrics in the same order
    return tuple(specs[i] for i in order)


def _draw_rule(rng: np.random.Generator, metrics: tuple[MetricSpec, ...]
               ) -> tuple[str, tuple[RuleCondition, ...], tuple[MetricSpec, ...]]:
    by_kind = {m.kind: m for m in metrics}
    lat_ms = float(_pick(rng, (800, 1000, 1500, 2000, 3000)))
    err = float(_pick(rng, (0.02, 0.05, 0.1)))
    lat = RuleCondition(by_kind["latency_p99"].name, ">=", _unit(lat_ms * by_kind["latency_p99"].scale))
    roll = rng.random()
    if roll < 0.2:  # an incident flag owned by another system; never a model input
        name, scale = _pick(rng, _NAMES["flag"])
        metrics = (*metrics, MetricSpec(str(name), "flag", float(scale), feature=False))
        return "any", (RuleCondition(str(name), ">=", 1.0),), metrics
    if "error_ratio" in by_kind:
        e = RuleCondition(by_kind["error_ratio"].name, ">=", _unit(err * by_kind["error_ratio"].scale))
        if roll < 0.6:
            return "any", (e, lat), metrics
        return ("any", (e,), metrics) if roll < 0.85 else ("all", (e, lat), metrics)
    if "availability" in by_kind and roll < 0.7:
        a = by_kind["availability"]
        return "any", (RuleCondition(a.name, "<=", _unit((1 - err) * a.scale)),), metrics
    return "any", (lat,), metrics


def _unit(value: float) -> float:
    return float(f"{value:.6g}")


def world_config(world: World) -> dict:
    """The world's config: the contract keys only."""
    return {
        "step": f"{world.step_seconds}s",
        "window": f"{world.window_seconds}s",
        "horizon": f"{world.horizon_seconds // 60}m",
        "features": [{"name": m.name} for m in world.metrics if m.feature],
        "failure": {world.rule_mode: [{"metric": c.metric, "op": c.op, "value": c.value} for c in world.rule],
                    "for": f"{world.rule_for_seconds}s"},
    }


# ---------------------------------------------------------------------------- simulating one


@dataclass
class _Ep:
    start: int  # first failing step (the peak of a near miss)
    stop: int  # one past the last failing step (== start for a near miss)
    mechanism: str
    precursor: int  # steps
    near_miss: bool = False


@dataclass
class _Grid:
    world: World
    n: int  # steps
    ts0: int
    step: int
    horizon: int  # steps
    for_steps: int
    lat_thr: float | None  # latent thresholds the rule reads (ms, error ratio)
    err_thr: float | None


def _minutes(rng: np.random.Generator, grid: _Grid, lo: float, hi: float) -> int:
    return max(1, round(rng.uniform(lo, hi) * 60 / grid.step))


def _ar1(rng: np.random.Generator, n: int, tau_steps: float, sigma: float) -> np.ndarray:
    """A stationary AR(1) series (std `sigma`, correlation time `tau_steps`), by convolution."""
    a = math.exp(-1.0 / max(tau_steps, 1.0))
    k = int(min(max(5 * tau_steps, 2), 3000))
    shocks = rng.normal(0.0, sigma * math.sqrt(1 - a * a), n + k - 1)
    return np.convolve(shocks, a ** np.arange(k), mode="valid")[:n]


def _latent_thresholds(world: World) -> tuple[float | None, float | None]:
    specs = {m.name: m for m in world.metrics}
    lat = err = None
    for c in world.rule:
        spec = specs[c.metric]
        if spec.kind == "latency_p99":
            lat = c.value / spec.scale
        elif spec.kind == "error_ratio":
            err = c.value / spec.scale
        elif spec.kind == "availability":
            err = 1.0 - c.value / spec.scale
    return lat, err


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _daily(world: World, ts: np.ndarray) -> np.ndarray:
    def bumps(hours: np.ndarray) -> np.ndarray:
        shape = np.zeros(len(hours))
        for peak, weight in zip(world.peak_hours, (0.65, 0.45), strict=True):
            shape += weight * np.exp(-0.5 * (np.abs((hours - peak + 12) % 24 - 12) / 3.0) ** 2)
        return shape

    shape = bumps((ts % DAY_SECONDS) / 3600.0) / bumps(np.linspace(0, 24, 1441)).max()
    daily = world.night_floor + (1 - world.night_floor) * np.clip(shape, 0, 1)
    weekday = (ts // DAY_SECONDS + 3) % 7  # 1970-01-01 was a Thursday
    return daily * np.where(weekday >= 5, world.weekend_factor, 1.0)


def _promotions(rng: np.random.Generator, grid: _Grid) -> list[tuple[int, int, np.ndarray, float]]:
    """(first step, peak step, profile 0..1, size) of each promotion in the period."""
    world, days = grid.world, grid.n * grid.step / DAY_SECONDS
    promos = []
    for _ in range(int(rng.poisson(world.promos_per_day * days))):
        day = int(rng.integers(max(1, math.ceil(days))))
        hour = (float(_pick(rng, world.peak_hours)) + rng.normal(0, 2.5)) % 24
        first = int((day * DAY_SECONDS + hour * 3600) / grid.step)
        kind = str(_pick(rng, ("step", "linear", "linear", "exp")))
        ramp = 1 if kind == "step" else _minutes(rng, grid, 2, 15)
        hold, tau = _minutes(rng, grid, 5, 30), _minutes(rng, grid, 4, 15)
        x = np.linspace(0, 1, ramp + 1)[1:]
        rise = x if kind != "exp" else (np.exp(3 * x) - 1) / (math.e ** 3 - 1)
        profile = np.concatenate((rise, np.ones(hold), np.exp(-np.arange(1, 5 * tau) / tau)))
        size = _log_uniform(rng, *world.promo_size)
        if first < grid.n:
            promos.append((first, first + ramp, profile[: grid.n - first], size))
    return promos


def _traffic(rng: np.random.Generator, grid: _Grid, svc: ServiceSpec, daily: np.ndarray,
             promos: list) -> tuple[np.ndarray, np.ndarray]:
    """Demand and capacity (qps) of one service: operators pre-scale for most promotions."""
    n, world = grid.n, grid.world
    noise = np.exp(_ar1(rng, n, 300 / grid.step, world.noise) + rng.normal(0, world.noise / 3, n))
    days = np.arange(n) * grid.step // DAY_SECONDS
    demand = svc.scale_qps * daily * rng.lognormal(0, 0.06, int(days[-1]) + 1)[days] * noise
    capacity = np.full(n, svc.scale_qps * svc.headroom)
    for first, _peak, profile, size in promos:
        gain = (size - 1) * svc.promo_sensitivity * rng.uniform(0.7, 1.3)
        span = slice(first, first + len(profile))
        demand[span] *= 1 + gain * profile
        peak_u = float(np.max(demand[span])) / capacity[first]
        overload = peak_u > 1.15 and rng.random() < world.overload_share
        target = rng.uniform(1.15, 1.8) if overload else rng.uniform(0.55, 0.9)
        lead = _minutes(rng, grid, 10, 40)
        scaled = slice(max(0, first - lead), first + len(profile))
        capacity[scaled] = np.maximum(capacity[scaled], capacity[first] * peak_u / target)
        u = demand[span] / capacity[span]
        over = np.flatnonzero(u > 1)
        if overload and len(over) and rng.random() < 0.6:  # autoscaling catches up mid-incident
            fix = first + int(over[0]) + _minutes(rng, grid, 2, 12)
            capacity[fix: span.stop] *= float(np.max(u)) / rng.uniform(0.6, 0.85)
    return demand, capacity


def _overloads(grid: _Grid, u: np.ndarray) -> list[_Ep]:
    smooth = np.convolve(u, np.ones(3) / 3, mode="same")
    over = smooth > 1.0
    eps: list[_Ep] = []
    for start, stop in _runs(over):
        if stop - start < grid.for_steps + 3:
            continue
        if eps and start - eps[-1].stop < grid.horizon:  # a relapse is the same incident
            eps[-1].stop = stop
            continue
        look = smooth[max(0, start - grid.horizon * 6): start]
        calm = np.flatnonzero(look < 0.8)
        precursor = len(look) - 1 - int(calm[-1]) if len(calm) else len(look)
        eps.append(_Ep(start, stop, "overload", precursor))
    return eps


_PRECURSOR_MINUTES = {"slow_leak": (20, 60), "pool_exhaustion": (2, 12), "gc_thrash": (2, 10),
                      "bad_deploy": (0, 0), "crash": (0, 0)}


def _free(busy: np.ndarray, lo: int, hi: int) -> bool:
    return lo >= 0 and hi <= len(busy) and not busy[lo:hi].any()


def _schedule(rng: np.random.Generator, grid: _Grid, eps: list[_Ep], busy: np.ndarray) -> None:
    """Scripted root failures and near misses, each one horizon clear of any other episode."""
    world, days = grid.world, grid.n * grid.step / DAY_SECONDS
    names = [k for k, _ in world.mechanism_weights]
    weights = np.array([w for _, w in world.mechanism_weights])
    plan = [False] * int(rng.poisson(world.failures_per_service_day * days))
    plan += [True] * int(rng.poisson(world.near_misses_per_service_day * days))
    for near in plan:
        mech = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        if near and mech in ("bad_deploy", "crash"):
            gradual = ("slow_leak", "pool_exhaustion") if "pool_exhaustion" in names else ("slow_leak",)
            mech = str(_pick(rng, gradual))
        lo, hi = _PRECURSOR_MINUTES[mech]
        pre = _minutes(rng, grid, lo, hi) if hi else 0
        dur = 0 if near else max(grid.for_steps + 3, _minutes(rng, grid, 2, 20))
        for _ in range(20):
            start = int(rng.integers(grid.n))
            lo_i, hi_i = start - pre - grid.horizon, start + max(dur, pre // 2) + grid.horizon
            if _free(busy, lo_i, hi_i):
                busy[lo_i:hi_i] = True
                eps.append(_Ep(start, start + dur, mech, pre, near))
                break


def _cascade(rng: np.random.Generator, grid: _Grid, eps: list[list[_Ep]], busy: list[np.ndarray]) -> None:
    """A failing dependency takes some of its callers down minutes later (deps first)."""
    world = grid.world
    index = {s.name: i for i, s in enumerate(world.services)}
    callers: dict[int, list[int]] = {}
    for caller, deps in world.topology:
        for dep in deps:
            callers.setdefault(index[dep], []).append(index[caller])
    for k in range(len(world.services) - 1, -1, -1):
        for ep in [e for e in eps[k] if not e.near_miss]:
            for c in callers.get(k, []):
                p = world.cascade_probability * (0.4 if ep.mechanism == "cascade" else 1.0)
                lag = _minutes(rng, grid, 1, 6)
                if rng.random() >= p or ep.stop - ep.start <= lag + grid.for_steps + 2:
                    continue
                stop = ep.stop + _minutes(rng, grid, 0, 3)
                lo_i, hi_i = ep.start - grid.horizon, stop + grid.horizon
                if _free(busy[c], lo_i, hi_i):
                    busy[c][lo_i:hi_i] = True
                    eps[c].append(_Ep(ep.start + lag, stop, "cascade", lag))


def _soft_cap(x: np.ndarray, threshold: float) -> np.ndarray:
    """Values kept below 0.9 x threshold, bending smoothly from 0.6 x threshold up."""
    knee, top = 0.6 * threshold, 0.9 * threshold
    return np.where(x > knee, knee + (top - knee) * np.tanh((x - knee) / (top - knee)), x)


def _render(rng: np.random.Generator, grid: _Grid, svc: ServiceSpec, demand: np.ndarray,
            capacity: np.ndarray, eps: list[_Ep]
            ) -> tuple[dict[str, np.ndarray], np.ndarray, list[int], list[int]]:
    """Latent signals of one service (qps, ms, ratios, fractions), its failing mask, restart
    steps and blip steps."""
    n, world = grid.n, grid.world
    u = demand / capacity
    lat_mult, err_add, cpu_add = np.ones(n), np.zeros(n), np.zeros(n)
    mem_base = rng.uniform(0.3, 0.6)
    mem = mem_base + _ar1(rng, n, 3600 / grid.step, 0.02)
    gc = rng.uniform(3, 30) * (0.8 + 0.4 * np.minimum(u, 1.2))
    pool_add, qps_drop, cache_drop = np.zeros(n), np.zeros(n), np.zeros(n)
    failing, restarts = np.zeros(n, dtype=bool), []
    nominal_err = grid.err_thr or _NOMINAL_ERROR_RATIO
    for ep in eps:
        lo = max(0, ep.start - ep.precursor)
        tail = _minutes(rng, grid, 2, 8) if ep.near_miss else ep.stop - ep.start
        hi = min(n, ep.start + tail)
        env = np.concatenate((np.linspace(0, 1, ep.start - lo + 1)[1:], np.ones(max(0, hi - ep.start))))
        if ep.near_miss:
            env[ep.start - lo:] = np.linspace(1, 0, hi - ep.start)
            env *= rng.uniform(0.5, 0.85)
        span, m = slice(lo, hi), ep.mechanism
        if m == "slow_leak":
            mem[span] += (0.985 - mem_base) * env
            gc[span] += rng.uniform(50, 400) * env ** 3
            lat_mult[span] *= 1 + rng.uniform(0.2, 0.8) * env ** 2
        elif m == "pool_exhaustion":
            pool_add[span] += 1.2 * env
            lat_mult[span] *= 1 + rng.uniform(0.3, 1.0) * env ** 3
        elif m == "gc_thrash":
            gc[span] += rng.uniform(200, 1500) * env ** 2
            cpu_add[span] += rng.uniform(0.15, 0.35) * env
            lat_mult[span] *= 1 + rng.uniform(0.3, 1.0) * env ** 2
        elif m == "cascade":
            lat_mult[span] *= 1 + rng.uniform(0.5, 2.0) * env
            pool_add[span] += rng.uniform(0.3, 0.7) * env
            err_add[span] += nominal_err * rng.uniform(0.1, 0.4) * env
        fail = slice(ep.start, min(n, ep.stop))
        if m == "bad_deploy":
            restarts.append(ep.start)
            cache_drop[fail] = rng.uniform(0.05, 0.4)
            cpu_add[fail] += rng.uniform(-0.1, 0.2)
        elif m == "crash":
            qps_drop[fail] = rng.uniform(0.5, 0.95)
        if ep.near_miss:
            if m == "slow_leak":  # restarted in time: memory is back to normal
                restarts.append(ep.start)
                mem[ep.start: hi] -= (0.985 - mem_base) * env[ep.start - lo:]
            continue
        failing[fail] = True
        if m in ("slow_leak", "bad_deploy", "crash"):
            restarts.append(min(ep.stop, n - 1))
    uc = np.minimum(u, 0.98)
    white = rng.normal(0, 1, (3, n))
    lat = (svc.base_latency_ms * (1 + 0.3 * uc ** 4 / (1.02 - uc)) * lat_mult + 0.5 * gc
           + svc.base_latency_ms * 20 * np.maximum(u - 1, 0)) * np.exp((0.06 + world.noise) * white[0])
    err = (svc.base_error_ratio * np.exp(0.3 * white[1]) + err_add + 0.9 * np.maximum(0, 1 - 1 / u))
    cpu_idle = rng.uniform(0.02, 0.1)
    cpu = np.clip(cpu_idle + (svc.cpu_at_capacity - cpu_idle) * np.minimum(u, 1.1) + cpu_add
                  + 0.015 * white[2], 0.005, 1.0)
    cpu[qps_drop > 0] *= 0.4
    qps = np.minimum(demand, capacity * 1.03) * (1 - qps_drop)
    blips = _enforce(rng, grid, eps, lat, err, failing)
    pool = np.clip(rng.uniform(0.15, 0.4) * (0.5 + 0.6 * uc) + pool_add + rng.normal(0, 0.02, n), 0, 1)
    latents = {"qps": qps, "lat": lat, "err": np.clip(err, 0, 1), "cpu": cpu, "u": u, "pool": pool,
               "gc": gc, "mem": np.clip(mem, 0.05, 0.995), "cache_drop": cache_drop}
    return latents, failing, restarts, blips


def _enforce(rng: np.random.Generator, grid: _Grid, eps: list[_Ep], lat: np.ndarray, err: np.ndarray,
             failing: np.ndarray) -> list[int]:
    """Make the rule's metrics agree with the truth: past the thresholds while failing, below
    them elsewhere, but for single-step blips shorter than the rule's `for`."""
    lat_thr, err_thr = grid.lat_thr, grid.err_thr
    for values, thr in ((lat, lat_thr), (err, err_thr)):
        if thr is not None:
            values[:] = _soft_cap(values, thr)
    both = grid.world.rule_mode == "all"
    for ep in eps:
        if ep.near_miss:
            continue
        fail = slice(ep.start, min(len(lat), ep.stop))
        steps = fail.stop - fail.start
        latency_first = ep.mechanism in LATENCY_FIRST
        coin = rng.random() < 0.5  # the other signal breaks too, half the time
        push_lat = both or (latency_first and lat_thr is not None) or err_thr is None or coin
        push_err = both or (not latency_first and err_thr is not None) or lat_thr is None or coin
        if lat_thr is None and err_thr is None:
            push_lat, push_err = latency_first or rng.random() < 0.5, not latency_first or rng.random() < 0.5
        for values, push, rule_thr, nominal, hi in ((lat, push_lat, lat_thr, _NOMINAL_LATENCY_MS, 4.0),
                                                    (err, push_err, err_thr, _NOMINAL_ERROR_RATIO, 8.0)):
            thr = rule_thr or nominal
            if push:
                level = thr * rng.uniform(1.25, hi) * rng.uniform(0.9, 1.15, steps)
                values[fail] = np.maximum(values[fail], np.maximum(level, 1.1 * thr))
            elif rule_thr is None:  # not read by the rule: degraded, as a failing service is
                values[fail] = np.maximum(values[fail], thr * rng.uniform(0.3, 0.9))
    err[:] = np.minimum(err, 1.0)
    # blips: one step past the threshold, well clear of failures (and of each other)
    days = grid.n * grid.step / DAY_SECONDS
    clear = np.convolve(failing, np.ones(2 * grid.for_steps + 5), mode="same") == 0
    blips: list[int] = []
    for values, thr in ((lat, lat_thr), (err, err_thr)):
        if thr is None:
            continue
        for i in rng.integers(grid.n, size=int(rng.poisson(grid.world.blips_per_service_day * days / 2))):
            if clear[i]:
                values[i] = max(values[i], thr * rng.uniform(1.1, 2.0))
                clear[max(0, i - grid.for_steps - 2): i + grid.for_steps + 3] = False
                blips.append(int(i))
    return blips


def _columns(rng: np.random.Generator, grid: _Grid, svc: ServiceSpec, lat: dict[str, np.ndarray],
             failing: np.ndarray, restarts: list[int]) -> np.ndarray:
    """(steps, metrics) in the world's own names and units, rounded to ~4 significant digits."""
    n, world = grid.n, grid.world
    qps, ms = lat["qps"], lat["lat"]
    inflight = qps * ms / 1000.0
    out = np.empty((n, len(world.metrics)))
    for j, spec in enumerate(world.metrics):
        kind = spec.kind
        if kind == "traffic":
            v = qps
        elif kind == "latency_p99":
            v = ms
        elif kind == "latency_p50":
            v = svc.base_latency_ms * 0.35 * np.sqrt(ms / svc.base_latency_ms)
        elif kind == "error_ratio":
            v = lat["err"]
        elif kind == "error_count":
            v = lat["err"] * qps
        elif kind == "availability":
            v = 1.0 - lat["err"]
        elif kind == "cpu":
            v = lat["cpu"]
        elif kind == "queue_depth":
            v = np.round(0.3 * inflight * np.exp(rng.normal(0, 0.2, n)))
        elif kind == "pool":
            v = lat["pool"] * (svc.pool_size if spec.scale < 0 else 1.0)
            v = np.round(v) if spec.scale < 0 else v
        elif kind == "gc_pause":
            v = lat["gc"] * np.exp(rng.normal(0, 0.15, n))
        elif kind == "cache_hit":
            drift = _ar1(rng, n, 1800 / grid.step, 0.01)
            v = np.clip(rng.uniform(0.8, 0.99) - lat["cache_drop"] + drift, 0, 1)
        elif kind == "load1":
            v = np.maximum(0, lat["cpu"] * rng.integers(4, 33) + _ar1(rng, n, 60 / grid.step, 0.3))
        elif kind == "mem":
            v = lat["mem"] * ({-1.0: svc.mem_limit_bytes, -2.0: svc.mem_limit_bytes / 2 ** 20,
                               -3.0: svc.mem_limit_bytes / 2 ** 30}.get(spec.scale, 1.0))
        elif kind == "disk_io":
            v = np.maximum(0, rng.uniform(2, 200) * (0.3 + qps / svc.scale_qps) + _ar1(rng, n, 30, 3))
        elif kind == "threads":
            v = np.round(np.minimum(256, 0.5 * inflight + 2 + lat["pool"] * 20))
        elif kind == "noise_walk":
            v = np.abs(rng.uniform(1, 100) + _ar1(rng, n, 6 * 3600 / grid.step, rng.uniform(1, 30)))
        elif kind == "noise_cron":
            period = int(_pick(rng, (300, 900, 3600))) // grid.step
            v = rng.uniform(1, 50) * (1 + 5 * (np.arange(n) % max(period, 2) < max(1, 60 // grid.step)))
            v = v * np.exp(rng.normal(0, 0.1, n))
        elif kind == "noise_white":
            v = rng.uniform(10, 3000) * (1 + 0.05 * rng.normal(0, 1, n))
        elif kind == "requests_counter":
            resets = set(restarts) | set(rng.integers(n, size=int(rng.poisson(
                dict(world.defects)["counter_reset_per_day"] * n * grid.step / DAY_SECONDS))).tolist())
            v = np.round(_counter(qps * grid.step, sorted(resets)))
        else:  # flag
            v = failing.astype(float)
        if spec.scale > 0:
            v = v * spec.scale
        out[:, j] = _round4(v)
    return out


def _counter(increments: np.ndarray, resets: list[int]) -> np.ndarray:
    total = np.cumsum(increments)
    for at in resets:  # a restarted process counts from zero again
        if 0 < at < len(total):
            total[at:] -= total[at - 1]
    return total


def _round4(v: np.ndarray) -> np.ndarray:
    top = float(np.percentile(np.abs(v), 90)) if len(v) else 0.0
    decimals = 4 - math.floor(math.log10(top)) if top > 0 else 4
    return np.round(v, int(min(max(decimals, -6), 9)))


def _emit(rng: np.random.Generator, grid: _Grid, svc: ServiceSpec, values: np.ndarray,
          protected: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """One service's samples with the world's data defects, and each one's arrival order key."""
    n, world = grid.n, grid.world
    rate = dict(world.defects)
    keep = rng.random(n) >= rate["gap"]
    days = n * grid.step / DAY_SECONDS
    for at in rng.integers(n, size=int(rng.poisson(rate["outage_per_day"] * days))):
        keep[at: at + _minutes(rng, grid, 1, 5)] = False  # the exporter was down
    keep |= protected  # a gap right after a blip would stretch it into a failure
    names = [m.name for m in world.metrics]
    rule_cols = {j for j, m in enumerate(world.metrics) if m.name in {c.metric for c in world.rule}}
    spiky = [j for j, m in enumerate(world.metrics)
             if j not in rule_cols and m.kind not in ("flag", "requests_counter")]
    for at in np.flatnonzero(rng.random(n) < rate["outlier"]):
        if spiky:
            j = int(_pick(rng, spiky))
            values[at, j] *= rng.uniform(3, 20)
    which = rng.integers(len(names), size=n)
    absent = np.where((rng.random(n) < rate["absent_metric"]) & ~protected, which, -1)
    null = np.where((rng.random(n) < rate["null_metric"]) & ~protected, which, -1)
    late_steps = 30 // grid.step
    delay = np.zeros(n, dtype=int)
    if late_steps:  # a step of 60 s cannot be late by a whole step within 30 s
        delay = np.where(rng.random(n) < rate["late"], rng.integers(1, late_steps + 1, size=n), 0)
    dup = rng.random(n) < rate["duplicate"]
    rows = values.tolist()
    ts = (grid.ts0 + np.arange(n) * grid.step).tolist()
    samples, keys = [], []
    for i in np.flatnonzero(keep).tolist():
        metrics = dict(zip(names, rows[i], strict=True))
        if absent[i] >= 0:
            del metrics[names[absent[i]]]
        if null[i] >= 0 and names[null[i]] in metrics:
            metrics[names[null[i]]] = None
        samples.append({"service": svc.name, "ts": ts[i], "metrics": metrics})
        keys.append(i + delay[i])
        if dup[i]:  # redelivered a little later
            samples.append({"service": svc.name, "ts": ts[i], "metrics": dict(metrics)})
            keys.append(i + rng.uniform(0.1, max(1.0, late_steps)))  # within the 30 s lateness too
    return samples, np.asarray(keys, dtype=float)


def simulate_world(world: World, days: float, start_ts: int = DEFAULT_START_TS, seed_offset: int = 0
                   ) -> Simulated:
    """`days` of the world's samples (in stream order: mostly by ts, a few late) and the truth."""
    step = world.step_seconds
    lat_thr, err_thr = _latent_thresholds(world)
    grid = _Grid(world, max(1, round(days * DAY_SECONDS / step)), start_ts // step * step, step,
                 world.horizon_seconds // step, max(1, -(-world.rule_for_seconds // step)), lat_thr, err_thr)
    seeds = np.random.SeedSequence([world.seed, seed_offset, 0xC0FFEE]).spawn(len(world.services) + 1)
    rng = np.random.default_rng(seeds[-1])
    rngs = [np.random.default_rng(s) for s in seeds[:-1]]
    ts = grid.ts0 + np.arange(grid.n) * step
    daily, promos = _daily(world, ts), _promotions(rng, grid)
    traffic = [_traffic(r, grid, svc, daily, promos) for r, svc in zip(rngs, world.services, strict=True)]
    eps = [_overloads(grid, d / c) for d, c in traffic]
    busy = []
    for r, service_eps in zip(rngs, eps, strict=True):
        mask = np.zeros(grid.n, dtype=bool)
        for ep in service_eps:
            mask[max(0, ep.start - ep.precursor - grid.horizon): ep.stop + grid.horizon] = True
        _schedule(r, grid, service_eps, mask)
        busy.append(mask)
    _cascade(rng, grid, eps, busy)
    out = Simulated(calendar=_calendar(world, grid, promos, seed_offset))
    keys, owner = [], []
    for k, (r, svc, (demand, capacity)) in enumerate(zip(rngs, world.services, traffic, strict=True)):
        latents, failing, restarts, blips = _render(r, grid, svc, demand, capacity, eps[k])
        # no gap may stretch a blip into a failure, nor hide the onset of a failure
        protected = np.zeros(grid.n, dtype=bool)
        for at in blips + [e.start for e in eps[k] if not e.near_miss]:
            protected[at: at + grid.for_steps + 1] = True
        samples, order = _emit(r, grid, svc, _columns(r, grid, svc, latents, failing, restarts), protected)
        out.samples.extend(samples)
        keys.append(order)
        owner.append(np.full(len(order), k))
        for ep in sorted((e for e in eps[k] if not e.near_miss and e.start < grid.n), key=lambda e: e.start):
            out.truth.append(Episode(svc.name, int(ts[ep.start]), int(ts[min(ep.stop, grid.n) - 1]),
                                     ep.mechanism, ep.precursor * step))
    order = np.lexsort((np.concatenate(owner), np.concatenate(keys)))
    out.samples = [out.samples[i] for i in order.tolist()]
    out.truth.sort(key=lambda e: (e.start_ts, e.service))
    return out


# ---------------------------------------------------------------------------- files and CLI


def _stats(truth: list[Episode], services: int, days: float) -> dict:
    mechanisms: dict[str, int] = {}
    for e in truth:
        mechanisms[e.mechanism] = mechanisms.get(e.mechanism, 0) + 1
    early = sum(1 for e in truth if e.precursor_seconds >= 120)
    return {"failures": len(truth), "per_service_day": round(len(truth) / (services * days), 2),
            "with_precursor_share": round(early / len(truth), 2) if truth else 0.0,
            "mechanisms": dict(sorted(mechanisms.items()))}


def _write_jsonl(samples: list[dict], path: Path) -> None:
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with open(path, "w", encoding="utf-8") as stream:
        stream.writelines(dumps(s) + "\n" for s in samples)


def write_world(seed: int, out_dir: Path, train_days: float, test_days: float) -> dict:
    """config.yaml, topology.yaml, train.jsonl, test.jsonl (later in time, another random
    stream), world.json (with the topology, both periods' ground truth and promotions),
    calendar-train.yaml and calendar-test.yaml (the announced promotions, `calendar.file`
    format) under `out_dir`;
    returns a summary."""
    began = time.monotonic()
    world = draw_world(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_steps = round(train_days * DAY_SECONDS / world.step_seconds)
    train = simulate_world(world, train_days, DEFAULT_START_TS, seed_offset=0)
    test_start = DEFAULT_START_TS + train_steps * world.step_seconds
    test = simulate_world(world, test_days, test_start, seed_offset=1)
    with open(out_dir / "config.yaml", "w", encoding="utf-8") as stream:
        yaml.safe_dump(world_config(world), stream, sort_keys=False)
    write_topology(world, out_dir / "topology.yaml")
    _write_jsonl(train.samples, out_dir / "train.jsonl")
    _write_jsonl(test.samples, out_dir / "test.jsonl")
    doc = json.loads(world.to_json())
    doc["truth"] = {"train": [asdict(e) for e in train.truth], "test": [asdict(e) for e in test.truth]}
    doc["promotions"] = {"train": train.calendar, "test": test.calendar}
    for name, part in (("train", train), ("test", test)):  # the announced ones: calendar.file
        announced = [{k: v for k, v in e.items() if k != "announced"} for e in part.calendar
                     if e["announced"]]
        (out_dir / f"calendar-{name}.yaml").write_text(
            yaml.safe_dump({"events": announced}, sort_keys=False), encoding="utf-8")
    (out_dir / "world.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    n = len(world.services)
    return {"seed": seed, "services": n, "step_seconds": world.step_seconds,
            "metrics": [m.name for m in world.metrics], "failure": world_config(world)["failure"],
            "train": {"samples": len(train.samples), **_stats(train.truth, n, train_days)},
            "test": {"samples": len(test.samples), **_stats(test.truth, n, test_days)},
            "seconds": round(time.monotonic() - began, 1)}


def write_topology(world: World, path: Path) -> None:
    """The world's dependencies as a `topology_file` (caller: [dependencies])."""
    from sentinel.sim.simulate import write_topology as write

    write({caller: list(deps) for caller, deps in world.topology}, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sentinel.sim.worlds", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--train-days", type=float, default=4.0)
    parser.add_argument("--test-days", type=float, default=2.0)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--topology-out", type=Path, metavar="FILE",
                        help="also write the world's topology here (out-dir/topology.yaml "
                             "is always written)")
    args = parser.parse_args(argv)
    print(json.dumps(write_world(args.seed, args.out_dir, args.train_days, args.test_days)))
    if args.topology_out:
        write_topology(draw_world(args.seed), args.topology_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
