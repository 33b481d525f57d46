"""Deterministic flash-sale traffic with failures: the data behind `sentinel simulate`.

Usage::

    sim = simulate(services=6, days=4, seed=1)
    write_jsonl(sim.samples, Path("history.jsonl"))
    print(sim.summary)

The model, per service and per 10 s step:

- **Demand**: a daily curve (0.12x at night, peaks late morning and evening) x a per-day
  factor x ~5 % noise. Scales differ ~70x (gateway ~20k qps, payment ~300 qps). Flash sales
  (2-4 a day near 10:00, 12:00, 15:00, 20:00, 21:30) multiply demand by 2-8x, scaled by
  each service's sensitivity (checkout, payment, cart, inventory hardest): users arrive early
  (a ramp over the 10 minutes before), surge over 3-6 minutes, then decay over 15-40 minutes.
- **Capacity**: replicas x per-replica qps. An autoscaler reads cpu once a minute and orders
  replicas to get back to its target; they come online 2-4 minutes later, up to a maximum.
  Operators pre-scale ~65 % of sales from an imperfect forecast: most pass, some peak at
  cpu 0.85-0.95 and recover.
- **Queue**: a backlog grows while arrivals exceed capacity; callers wait for answers, so a
  backlog holds back new requests and the queueing delay settles near
  think time x (load / capacity - 1) instead of exploding. p99 = base x
  (1 + k u^4 / (1.05 - u)) + queueing delay + dependency waits + GC pauses; cpu = served /
  cpu capacity. Requests time out once the delay passes ~1 s, a full queue sheds, errors
  bring retries. So p99 and cpu climb for minutes before a modest overload tips over.
- **Incidents** (outside the change freeze around sales): capacity loss (45-70 % of
  capacity lost over 4-10 minutes; replacements cannot be scheduled until it is mitigated),
  a memory leak (GC pauses and per-request cost creep up over 30-90 minutes, then
  out-of-memory crash loops unless restarted in time), a slow dependency (waits accelerate
  over 3-10 minutes and hold worker threads, so p99 rises while cpu does not). A degraded
  dependency cascades to its callers (checkout -> payment, inventory; cart -> inventory;
  gateway -> catalog): its excess latency, the threads held on it, half its errors.
  Some are near misses: a leak restarted in time, a mild slowdown, a loss at night.
- **Defects** in the emitted stream: ~1 % samples missing, ~0.5 % duplicated, ~0.5 % late by
  1-3 steps, ~0.3 % with one metric absent, and exporter gaps of 2-5 minutes.

Failures are not labelled in the data: a service has failed while `error_rate >= 0.05` or
`p99_ms >= 2000` holds for 30 s, exactly as the default config says.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.errors import SentinelError

log = logging.getLogger(__name__)

DEFAULT_START_TS = 1763942400  # 2025-11-24 00:00 UTC, a Monday
STEP_SECONDS = 10
STEPS_PER_MINUTE = 60 // STEP_SECONDS
STEPS_PER_DAY = 86400 // STEP_SECONDS
SALE_SLOTS_HOURS = (10.0, 12.0, 15.0, 20.0, 21.5)
LATENCY_K = 0.35  # p99 = base x (1 + k u^4 / (1.05 - u)) before queueing
MAX_QUEUE_SECONDS = 8.0  # a full queue sheds instead of growing
THRASH_STEPS = 5 * STEPS_PER_MINUTE  # GC thrash before a leak's out-of-memory
BURSTS_PER_STEP = 0.006  # p99 tail bursts: about two an hour per service
RETRY_FACTOR = 0.6  # extra load per unit of error rate (clients retry)
THINK_SECONDS = 12.0  # callers wait for answers: queued requests hold back new ones
THREAD_HOLD_MS = 1500.0  # waits on a dependency of this size halve the worker pool
DEP_TIMEOUT_MS = 3000.0  # callers give up on a dependency after this long
P99_CAP_MS = 10000.0  # the clients' own timeout
CAUSES = ("capacity_loss", "leak", "dependency")
FAILURE_ERROR_RATE, FAILURE_P99_MS, FAILURE_STEPS = 0.05, 2000.0, 3


@dataclass(frozen=True)
class ServiceProfile:
    name: str
    peak_qps: float  # daily peak outside sales
    replica_qps: float  # what one replica serves at cpu 1.0
    min_replicas: int
    max_replicas: int
    target_cpu: float  # the autoscaler's target utilisation
    base_latency_ms: float
    base_error_rate: float
    sale_sensitivity: float  # share of a sale's extra traffic that reaches this service
    incidents_per_day: float
    deps: tuple[str, ...] = ()


BASE_PROFILES = (
    ServiceProfile("gateway", 20000, 800, 6, 60, 0.45, 40, 0.001, 0.22, 0.5, ("catalog",)),
    ServiceProfile("catalog", 8000, 400, 4, 50, 0.45, 60, 0.001, 0.28, 0.5),
    ServiceProfile("cart", 1500, 60, 3, 55, 0.5, 80, 0.002, 0.8, 1.2, ("inventory",)),
    ServiceProfile("checkout", 400, 20, 3, 45, 0.5, 180, 0.002, 1.0, 1.0,
                   ("payment", "inventory")),
    ServiceProfile("payment", 300, 15, 3, 45, 0.5, 250, 0.003, 1.0, 1.2),
    ServiceProfile("inventory", 900, 40, 3, 50, 0.5, 50, 0.001, 0.85, 1.2),
    ServiceProfile("search", 3000, 150, 3, 45, 0.5, 120, 0.001, 0.35, 0.5),
    ServiceProfile("recommend", 2500, 100, 3, 45, 0.5, 90, 0.002, 0.3, 0.5),
)


@dataclass(frozen=True)
class Sale:
    start_step: int
    multiplier: float  # peak traffic multiplier for a fully sensitive service
    prescaled: bool  # operators added capacity ahead of it
    ramp_fraction: float  # share of the extra traffic already there at the start
    surge_minutes: float
    decay_minutes: float


@dataclass(frozen=True)
class Incident:
    service: str
    cause: str  # one of CAUSES
    start_step: int
    build_steps: int  # how long the degradation takes to develop
    hold_steps: int  # how long it lasts once developed, until mitigated
    severity: float  # capacity lost, GC pause ms at the end of a leak, or dependency wait ms


@dataclass(frozen=True)
class Simulation:
    samples: list[dict] = field(repr=False)
    summary: dict
    calendar: list[dict] = field(default_factory=list, repr=False)  # see `sale_calendar`


UNANNOUNCED_SHARE = 0.25  # promotions nobody put in the calendar


def sale_calendar(sales: list[Sale], start_ts: int, seed: int) -> list[dict]:
    """The sale calendar operators would have written: every sale as an event (its start,
    surge and decay, all services, its planned multiplier), with `announced` false for about
    UNANNOUNCED_SHARE of them, drawn from a generator of their own so that the traffic does
    not change. `sentinel simulate --calendar-out` writes the announced ones."""
    rng = np.random.default_rng([seed, 3000])
    events = []
    for sale in sales:
        start = start_ts + sale.start_step * STEP_SECONDS
        minutes = sale.surge_minutes + sale.decay_minutes
        events.append({"name": f"sale-{start}", "start": start,
                       "end": start + round(minutes * 60 / STEP_SECONDS) * STEP_SECONDS,
                       "services": "all", "multiplier": round(sale.multiplier, 1),
                       "announced": bool(rng.random() >= UNANNOUNCED_SHARE)})
    return events


def write_calendar(calendar: list[dict], path: Path) -> int:
    """The announced events as a calendar file (`calendar.file`); their number."""
    import yaml

    announced = [{k: v for k, v in e.items() if k != "announced"} for e in calendar
                 if e["announced"]]
    path.write_text(yaml.safe_dump({"events": announced}, sort_keys=False))
    return len(announced)


def profiles(n: int) -> list[ServiceProfile]:
    """The first n base profiles; beyond them numbered copies (`gateway-2`, ...)."""
    out = []
    for i in range(n):
        base, copy = BASE_PROFILES[i % len(BASE_PROFILES)], i // len(BASE_PROFILES) + 1
        if copy == 1:
            out.append(base)
            continue
        deps = tuple(f"{d}-{copy}" for d in base.deps)
        out.append(ServiceProfile(**{**base.__dict__, "name": f"{base.name}-{copy}",
                                     "deps": deps}))
    names = {p.name for p in out}
    return [ServiceProfile(**{**p.__dict__, "deps": tuple(d for d in p.deps if d in names)})
            for p in out]


def daily_curve(ts: np.ndarray) -> np.ndarray:
    """Relative demand by time of day (UTC), 0.15 at night and 1.0 at the evening peak."""
    hours = (ts % 86400) / 3600.0

    def bump(center: float, width: float) -> np.ndarray:
        dist = np.abs(hours - center)
        dist = np.minimum(dist, 24.0 - dist)
        return np.exp(-0.5 * (dist / width) ** 2)

    curve = 0.12 + 0.62 * bump(11.0, 2.3) + 0.35 * bump(15.5, 2.5) + 0.86 * bump(20.5, 1.8)
    return np.clip(curve, 0.0, 1.0)


def demand_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Multiplicative demand noise: a slow AR(1) drift (~4 %) plus a little white noise.

    Most of the step-to-step jitter is measurement noise (see `observe`); real demand is
    smooth at 10 s over thousands of users, and a jumpy demand would make an overloaded
    service flap in and out of failure.
    """
    shocks = rng.normal(0.0, 0.01, n)
    drift = np.empty(n)
    level = 0.0
    for i, shock in enumerate(shocks.tolist()):
        level = 0.97 * level + shock
        drift[i] = level
    return np.exp(drift + rng.normal(0.0, 0.012, n))


def schedule_sales(rng: np.random.Generator, n_steps: int, start_ts: int) -> list[Sale]:
    sales = []
    first_day = start_ts // 86400
    for day in range(first_day, first_day + math.ceil(n_steps / STEPS_PER_DAY) + 1):
        k = int(rng.integers(2, 5))
        slots = np.sort(rng.choice(SALE_SLOTS_HOURS, size=k, replace=False))
        for hour in slots.tolist():
            offset_s = float(rng.uniform(-8, 12)) * 60
            step = int((day * 86400 + hour * 3600 + offset_s - start_ts) // STEP_SECONDS)
            sale = Sale(
                start_step=step,
                multiplier=float(np.exp(rng.uniform(np.log(2.0), np.log(8.0)))),
                prescaled=bool(rng.random() < 0.65),
                ramp_fraction=float(rng.uniform(0.3, 0.5)),
                surge_minutes=float(rng.uniform(3.0, 6.0)),
                decay_minutes=float(rng.uniform(15.0, 40.0)),
            )
            if 10 * STEPS_PER_MINUTE <= step < n_steps:
                sales.append(sale)
    return sales


def sale_shape(sale: Sale, n_steps: int) -> np.ndarray:
    """Share (0..1) of the sale's extra traffic present at each step."""
    minutes = (np.arange(n_steps) - sale.start_step) / STEPS_PER_MINUTE
    ramp = sale.ramp_fraction * np.clip((minutes + 10.0) / 10.0, 0.0, 1.0) ** 1.5
    x = np.clip(minutes / sale.surge_minutes, 0.0, 1.0)
    surge = ramp + (1.0 - ramp) * x * x * (3.0 - 2.0 * x)
    decay = np.exp(-np.clip(minutes - sale.surge_minutes, 0.0, None)
                   / (sale.decay_minutes / 3.0))
    shape = np.where(minutes < 0, ramp, surge * decay)
    return np.where(minutes < -10.0, 0.0, shape)


def incident_shape(rng: np.random.Generator, cause: str) -> tuple[float, float, float]:
    """(build minutes, hold minutes, severity) of one incident; some are near misses."""
    near_miss = rng.random() < 0.35
    if cause == "capacity_loss":
        return rng.uniform(4, 10), rng.uniform(6, 16), rng.uniform(0.45, 0.7)
    if cause == "leak":  # severity: GC pause ms before the thrash; a restart in time (before
        # the thrash, as an on-call would on seeing the heap grow) avoids the OOM
        hold = -rng.uniform(6, 15) if near_miss else rng.uniform(4, 15)
        return rng.uniform(30, 90), hold, rng.uniform(500, 1300)
    severity = rng.uniform(400, 1300) if near_miss else rng.uniform(2500, 4500)
    return rng.uniform(3, 10), rng.uniform(5, 18), severity


def schedule_incidents(rng: np.random.Generator, services: list[ServiceProfile],
                       n_steps: int, sales: list[Sale]) -> list[Incident]:
    """Incidents per service, placed outside the change freeze around sales."""
    busy = np.zeros(n_steps, dtype=bool)
    for sale in sales:
        busy[max(0, sale.start_step - 40 * STEPS_PER_MINUTE):sale.start_step
             + 60 * STEPS_PER_MINUTE] = True
    incidents = []
    days = n_steps / STEPS_PER_DAY
    for profile in services:
        # a steady rate rather than Poisson, so short runs still see a few incidents
        for _ in range(int(profile.incidents_per_day * days + rng.random())):
            cause = str(rng.choice(CAUSES, p=(0.4, 0.25, 0.35)))
            build, hold, severity = incident_shape(rng, cause)
            length = int((build + hold + 20) * STEPS_PER_MINUTE)
            for start in rng.integers(0, max(1, n_steps - length), 20).tolist():
                if not busy[start:start + length].any():
                    break
            else:
                continue
            busy[start:start + length] = True
            incidents.append(Incident(profile.name, cause, start,
                                      int(build * STEPS_PER_MINUTE),
                                      int(hold * STEPS_PER_MINUTE), float(severity)))
    return incidents


@dataclass(frozen=True)
class Effects:
    """Per-step incident effects on one service."""

    capacity: np.ndarray  # factor on capacity (node loss, bad deploy)
    cost: np.ndarray  # factor on cpu per request (leak)
    gc_ms: np.ndarray  # GC pause latency (leak)
    wait_ms: np.ndarray  # wait on a slow external dependency
    blocked: np.ndarray  # new replicas cannot be scheduled (the lost nodes are not back yet)


def incident_effects(incidents: list[Incident], n_steps: int) -> Effects:
    steps = np.arange(n_steps)
    capacity, cost = np.ones(n_steps), np.ones(n_steps)
    gc_ms, wait_ms = np.zeros(n_steps), np.zeros(n_steps)
    blocked = np.zeros(n_steps, dtype=bool)
    for inc in incidents:
        rel = steps - inc.start_step
        active = (rel >= 0) & (rel < inc.build_steps + inc.hold_steps)
        level = np.where(active, np.clip(rel / inc.build_steps, 0.0, 1.0), 0.0)
        if inc.cause == "capacity_loss":
            capacity *= 1.0 - inc.severity * level
            blocked |= active  # replacement pods wait for nodes until it is mitigated
        elif inc.cause == "leak":
            # the heap fills slowly; in the last minutes before out-of-memory the collector
            # thrashes: GC time and cpu per request climb steeply (the timing precursor)
            thrash = np.clip((rel - inc.build_steps + THRASH_STEPS) / THRASH_STEPS, 0.0, 1.0)
            thrash *= active
            cost *= 1.0 + 0.5 * level**2 + 0.6 * thrash**2
            gc_ms += inc.severity * (level**3 + 1.5 * thrash**2)
            # out of memory: pods crash-loop from the end of the build until restarted
            oom = np.clip((rel - inc.build_steps) / STEPS_PER_MINUTE, 0.0, 1.0) * active
            capacity *= 1.0 - 0.6 * oom
            blocked |= oom > 0
        else:  # accelerating, so the climb through the failure threshold is brief
            wait_ms += inc.severity * level**2
    return Effects(capacity, cost, gc_ms, wait_ms, blocked)


@dataclass(frozen=True)
class Series:
    qps: np.ndarray
    p99_ms: np.ndarray
    error_rate: np.ndarray
    cpu: np.ndarray


class Autoscaler:
    """A horizontal autoscaler with the delays that make flash sales dangerous.

    `observe` is called every step with the cpu; once a minute it orders the replicas that
    would bring cpu back to the target, which come online 2-4 minutes later. It scales down
    only after five calm minutes, by at most 10 % a minute.
    """

    def __init__(self, profile: ServiceProfile, first_demand: float, delays: list[int]) -> None:
        self.profile, self.delays = profile, delays
        wanted = math.ceil(first_demand / (profile.replica_qps * profile.target_cpu))
        self.replicas = float(min(max(wanted, profile.min_replicas), profile.max_replicas))
        self.pending: list[tuple[int, float]] = []  # (online at step, replicas)
        self.cpu_sum, self.calm_minutes = 0.0, 0

    def replicas_at(self, t: int, floor: float, blocked: bool) -> float:
        self.replicas = max(self.replicas, floor)
        while self.pending and self.pending[0][0] <= t and not blocked:
            self.replicas += self.pending.pop(0)[1]
        return self.replicas

    def observe(self, t: int, cpu: float) -> None:
        self.cpu_sum += cpu
        if t % STEPS_PER_MINUTE != STEPS_PER_MINUTE - 1:
            return
        mean_cpu, self.cpu_sum = self.cpu_sum / STEPS_PER_MINUTE, 0.0
        p = self.profile
        wanted = min(p.max_replicas, math.ceil(self.replicas * mean_cpu / p.target_cpu))
        on_order = sum(n for _, n in self.pending)
        if wanted > self.replicas + on_order:
            self.pending.append((t + self.delays[t],
                                 min(wanted - self.replicas - on_order, self.replicas)))
        calm = wanted < self.replicas and not self.pending
        self.calm_minutes = self.calm_minutes + 1 if calm else 0
        if self.calm_minutes >= 5:
            self.replicas = max(float(p.min_replicas), wanted, self.replicas * 0.9)
            self.calm_minutes = 0


def run_service(profile: ServiceProfile, demand: np.ndarray, floor: np.ndarray,
                effects: Effects, upstream: list[Series], rng: np.random.Generator) -> Series:
    """Step the queue and the autoscaler through time for one service (true values)."""
    n = len(demand)
    dep_wait, dep_errors = np.zeros(n), np.zeros(n)
    for dep in upstream:  # callers inherit a dependency's excess latency and errors
        excess = np.clip(dep.p99_ms - np.median(dep.p99_ms), 0.0, DEP_TIMEOUT_MS)
        dep_wait = np.maximum(dep_wait, excess)
        dep_errors += 0.5 * dep.error_rate
    wait = (effects.wait_ms + dep_wait).tolist()
    per_replica = (profile.replica_qps * effects.capacity / effects.cost).tolist()
    demand_l, floor_l, gc_l = demand.tolist(), floor.tolist(), effects.gc_ms.tolist()
    blocked = effects.blocked.tolist()
    scaler = Autoscaler(profile, demand_l[0],
                        rng.integers(2 * STEPS_PER_MINUTE, 4 * STEPS_PER_MINUTE + 1, n).tolist())
    out = np.empty((4, n))
    backlog = retrying = 0.0
    base = profile.base_latency_ms
    for t in range(n):
        cpu_capacity = scaler.replicas_at(t, floor_l[t], blocked[t]) * per_replica[t]
        # threads waiting on a slow dependency are not serving
        capacity = min(cpu_capacity, 1.6 * cpu_capacity / (1.0 + wait[t] / THREAD_HOLD_MS))
        wanted = demand_l[t] * (1.0 + RETRY_FACTOR * retrying)
        arrivals = wanted - min(0.9 * wanted, backlog / THINK_SECONDS)
        served = min(capacity, arrivals + backlog / STEP_SECONDS)
        backlog += (arrivals - served) * STEP_SECONDS
        shed = max(0.0, backlog - capacity * MAX_QUEUE_SECONDS)
        backlog -= shed
        delay_s = backlog / capacity
        u = min(served / capacity, 0.99)
        p99 = min(P99_CAP_MS, base * (1.0 + LATENCY_K * u**4 / (1.05 - u))
                  + 1000.0 * delay_s + wait[t] + gc_l[t])
        timeouts = 0.4 * (1.0 - math.exp(-max(0.0, delay_s - 1.0) / 1.5))
        dep_timeouts = 0.4 * min(1.0, max(0.0, wait[t] - 2000.0) / 3000.0)
        error = min(0.5, timeouts + shed / (arrivals * STEP_SECONDS) + dep_timeouts)
        retrying += 0.3 * (error - retrying)  # clients back off, so retries lag the errors
        cpu = served / cpu_capacity
        scaler.observe(t, cpu)
        out[:, t] = arrivals, p99, error, cpu

    error_rate = np.clip(out[2] + profile.base_error_rate + dep_errors, 0.0, 0.6)
    return Series(out[0], out[1], error_rate, np.clip(out[3], 0.0, 1.0))


def tail_bursts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Multipliers of the measured p99: a p99 over 10 s is noisy, and now and then a handful
    of slow requests (a GC pause, a cold cache, one bad host) lift it 1.5-3x for one or two
    steps. Never three: a burst alone must not look like a failure to the 30 s rule, but a
    static p99 threshold low enough to warn early trips on them."""
    noise = rng.lognormal(0.0, 0.1, n)
    starts = np.flatnonzero(rng.random(n) < BURSTS_PER_STEP)
    for start, length, factor in zip(starts, rng.integers(1, 3, len(starts)),
                                     rng.uniform(1.5, 3.0, len(starts)), strict=True):
        noise[start: start + length] *= factor
    return noise


def observe(series: Series, rng: np.random.Generator) -> Series:
    """What the exporter reports: the true series plus measurement noise."""
    n = len(series.qps)
    return Series(
        qps=np.round(series.qps * rng.normal(1.0, 0.03, n), 1),
        p99_ms=np.round(series.p99_ms * tail_bursts(rng, n), 1),
        error_rate=np.round(np.clip(series.error_rate * rng.lognormal(0.0, 0.12, n), 0, 1), 5),
        cpu=np.round(np.clip(series.cpu + rng.normal(0.0, 0.015, n), 0.01, 1.0), 4),
    )


def prescale_floor(profile: ServiceProfile, demand_no_sale: np.ndarray, sales: list[Sale],
                   multipliers: list[float], rng: np.random.Generator) -> np.ndarray:
    """Replicas operators hold ahead of pre-scaled sales (from an imperfect forecast)."""
    floor = np.zeros(len(demand_no_sale))
    for sale, multiplier in zip(sales, multipliers, strict=True):
        forecast_error = float(rng.lognormal(-0.05, 0.22))
        if not sale.prescaled:
            continue
        start = max(0, sale.start_step - 20 * STEPS_PER_MINUTE)
        end = sale.start_step + int(sale.decay_minutes * 1.5 * STEPS_PER_MINUTE)
        peak = float(demand_no_sale[start:end].max()) * multiplier * forecast_error
        floor[start:end] = np.maximum(floor[start:end], math.ceil(peak / (profile.replica_qps
                                                                         * 0.7)))
    return floor


def topology(services: int) -> dict[str, list[str]]:
    """The simulated services' dependencies (caller -> [dependencies]), as `topology:` reads
    them: the degraded dependency's latency and errors cascade to these callers."""
    return {p.name: list(p.deps) for p in profiles(services) if p.deps}


def write_topology(mapping: Mapping[str, list[str]], path: Path) -> None:
    """A `topology_file`: JSON for a ``.json`` path, else YAML; written atomically."""
    from sentinel.atomic import write_atomic

    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(dict(mapping), indent=1, sort_keys=True) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(dict(mapping), sort_keys=True)
    write_atomic(path, text.encode("utf-8"))


def failure_starts(series: Series) -> list[int]:
    """First steps of runs where the default failure rule holds for 30 s."""
    bad = (series.error_rate >= FAILURE_ERROR_RATE) | (series.p99_ms >= FAILURE_P99_MS)
    edges = np.diff(np.concatenate(([0], bad.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [int(s) for s, e in zip(starts, ends, strict=True) if e - s >= FAILURE_STEPS]


def simulate(services: int, days: float, seed: int,
             start_ts: int = DEFAULT_START_TS) -> Simulation:
    """Simulate `services` services for `days` days; the same arguments give the same output."""
    if services < 1 or days <= 0:
        raise SentinelError(f"simulate needs services >= 1 and days > 0, got {services}, {days}")
    rng = np.random.default_rng(seed)
    n = round(days * STEPS_PER_DAY)
    ts = start_ts + STEP_SECONDS * np.arange(n)
    svc = profiles(services)
    sales = schedule_sales(rng, n, start_ts)
    incidents = schedule_incidents(rng, svc, n, sales)
    day_index = (ts - start_ts) / 86400.0
    day_points = np.arange(-1, days + 2)
    day_factor = np.interp(day_index, day_points, rng.normal(1.0, 0.06, len(day_points))
                           * (1.0 + 0.08 * np.sin(2 * np.pi * day_points / 7.0)))
    base_curve = daily_curve(ts) * day_factor
    shapes = [sale_shape(sale, n) for sale in sales]

    truth: dict[str, Series] = {}
    # dependencies first: the graph is one level deep, so services without deps go first
    for profile in sorted(svc, key=lambda p: len(p.deps) > 0):
        sub = np.random.default_rng([seed, svc.index(profile)])
        multipliers = [1.0 + (sale.multiplier - 1.0) * profile.sale_sensitivity
                       * float(sub.lognormal(-0.1, 0.35)) for sale in sales]
        demand_no_sale = profile.peak_qps * base_curve * demand_noise(sub, n)
        lift = np.ones(n)
        for shape, multiplier in zip(shapes, multipliers, strict=True):
            lift += (multiplier - 1.0) * shape
        floor = prescale_floor(profile, demand_no_sale, sales, multipliers, sub)
        effects = incident_effects([i for i in incidents if i.service == profile.name], n)
        upstream = [truth[d] for d in profile.deps]
        truth[profile.name] = run_service(profile, demand_no_sale * lift, floor, effects,
                                          upstream, sub)

    observed = {p.name: observe(truth[p.name], np.random.default_rng([seed, 1000 + i]))
                for i, p in enumerate(svc)}
    samples, defects = emit(svc, observed, start_ts, np.random.default_rng([seed, 2000]))
    summary = summarize(svc, days, seed, start_ts, sales, incidents, observed)
    calendar = sale_calendar(sales, start_ts, seed)
    summary.update(n_samples=len(samples), defects=defects,
                   sales_announced=sum(e["announced"] for e in calendar))
    for entry, event in zip(summary["sale_schedule"], calendar, strict=True):
        entry["announced"] = event["announced"]
    return Simulation(samples, summary, calendar)


def summarize(svc: list[ServiceProfile], days: float, seed: int, start_ts: int,
              sales: list[Sale], incidents: list[Incident], series: dict[str, Series]) -> dict:
    """Counts for people and tests; failures by the default rule on the exported values."""
    in_sale = sale_service_failures = 0
    failures = {}
    for profile in svc:
        starts = failure_starts(series[profile.name])
        failures[profile.name] = len(starts)
        for sale in sales:
            window = (sale.start_step - 10 * STEPS_PER_MINUTE,
                      sale.start_step + 30 * STEPS_PER_MINUTE)
            hits = sum(window[0] <= s < window[1] for s in starts)
            in_sale += hits
            sale_service_failures += hits > 0
    return {
        "services": [p.name for p in svc], "days": days, "seed": seed, "start_ts": start_ts,
        "sales": len(sales), "sales_prescaled": sum(s.prescaled for s in sales),
        "sale_schedule": [{"start_ts": start_ts + s.start_step * STEP_SECONDS,
                           "multiplier": round(s.multiplier, 2), "prescaled": s.prescaled}
                          for s in sales],
        "sale_service_pairs": len(sales) * len(svc),
        "sale_service_failures": sale_service_failures,
        "incidents": {c: sum(i.cause == c for i in incidents) for c in CAUSES},
        "failures": {"total": sum(failures.values()), "during_sales": in_sale,
                     "outside_sales": sum(failures.values()) - in_sale, "by_service": failures},
    }


def emit(svc: list[ServiceProfile], observed: dict[str, Series], start_ts: int,
         rng: np.random.Generator) -> tuple[list[dict], dict]:
    """Interleave the services by step and apply the stream's defects."""
    n_svc, n = len(svc), len(observed[svc[0].name].qps)
    total = n * n_svc
    step = np.repeat(np.arange(n), n_svc)
    which = np.tile(np.arange(n_svc), n)
    keep = rng.random(total) >= 0.01
    gap_samples = 0
    for s in range(n_svc):
        for _ in range(int(rng.poisson(0.3 * n / STEPS_PER_DAY))):
            first = int(rng.integers(0, n))
            width = int(rng.integers(2, 6)) * STEPS_PER_MINUTE
            idx = np.arange(first, min(n, first + width)) * n_svc + s
            gap_samples += int(keep[idx].sum())
            keep[idx] = False
    late = rng.integers(1, 4, total) * (rng.random(total) < 0.005)
    dup = rng.random(total) < 0.005
    order = (step + late) * (2 * n_svc) + np.where(late > 0, n_svc + which, which)
    order = np.concatenate([order[keep], order[keep & dup] + 0.5])
    source = np.concatenate([np.flatnonzero(keep), np.flatnonzero(keep & dup)])
    source = source[np.argsort(order, kind="stable")]
    drop_metric = rng.random(len(source)) < 0.003
    dropped_name = rng.integers(0, 4, len(source))

    phase = rng.uniform(0.0, 8.0, n_svc)
    jitter = np.round(phase[which] + rng.uniform(0.0, 1.0, total), 1)
    ts = np.round(start_ts + step * STEP_SECONDS + jitter, 1).tolist()
    names = [p.name for p in svc]
    columns = {
        metric: np.stack([getattr(observed[name], metric) for name in names], axis=1)
        .reshape(-1).tolist()
        for metric in ("qps", "p99_ms", "error_rate", "cpu")
    }
    metric_names = list(columns)
    which_l = which.tolist()
    samples = []
    for k, i in enumerate(source.tolist()):
        metrics = {m: columns[m][i] for m in metric_names}
        if drop_metric[k]:
            del metrics[metric_names[dropped_name[k]]]
        samples.append({"service": names[which_l[i]], "ts": ts[i], "metrics": metrics})
    defects = {
        "missing": int((~keep).sum()) - gap_samples, "gap_samples": gap_samples,
        "duplicated": int((keep & dup).sum()), "late": int((keep & (late > 0)).sum()),
        "missing_metric": int(drop_metric.sum()),
    }
    return samples, defects


def write_jsonl(samples: Iterable[dict], path: Path) -> int:
    """Write one compact JSON line per sample; returns how many were written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for sample in samples:
            out.write(json.dumps(sample, separators=(",", ":")) + "\n")
            count += 1
    return count


def produce_kafka(samples: Iterable[dict], bootstrap: str, topic: str, speed: float = 0.0,
                  on_progress: Callable[[int], None] | None = None,
                  security: Mapping[str, Any] | None = None) -> int:
    """Produce samples to Kafka (key = service name); returns how many were sent.

    `speed` paces on event time: simulated seconds per wall second (60 = a minute of
    traffic per second), 0 = as fast as possible. `on_progress(count)` is called every
    10,000 samples and at the end. `security`: kafka-python's TLS/SASL arguments
    (sentinel.daemon.kafka_client.client_security).
    """
    from sentinel.daemon.kafka_client import kafka_errors, make_producer

    producer = make_producer(bootstrap, security)  # KafkaUnavailable: "cannot connect to Kafka at"
    # This function closes the producer itself; kafka-python's exit hook would only print a
    # KafkaTimeoutError traceback when the process exits while a send waits on a dead broker.
    cleanup = getattr(producer, "_cleanup", None)
    if cleanup is not None:
        atexit.unregister(cleanup)
    count, first_ts, wall_start, newest_ts = 0, None, time.monotonic(), -math.inf
    try:
        with kafka_errors(f"producing to {topic} at {bootstrap} failed"):
            for sample in samples:
                ts = float(sample["ts"])
                if speed > 0:
                    first_ts = ts if first_ts is None else first_ts
                    newest_ts = max(newest_ts, ts)  # late samples do not rewind the pace
                    ahead_s = (newest_ts - first_ts) / speed - (time.monotonic() - wall_start)
                    if ahead_s > 0:
                        time.sleep(ahead_s)
                producer.send(topic, key=sample["service"].encode("utf-8"),
                              value=json.dumps(sample, separators=(",", ":")).encode("utf-8"))
                count += 1
                if on_progress is not None and count % 10_000 == 0:
                    on_progress(count)
            producer.flush()
    finally:
        try:
            producer.close(timeout=5)
        except Exception as exc:  # the broker is gone (Ctrl-C): nothing left to deliver to
            log.debug("closing the producer: %s", exc)
    if on_progress is not None:
        on_progress(count)
    return count
