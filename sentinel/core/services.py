"""Which services this replica tracks: their partition, silence and the memory cap. Pure.

    >>> tracker = ServiceTracker(silence_seconds=60, max_services=2)
    >>> tracker.seen("cart", partition=0, now=0.0), tracker.seen("checkout", 1, now=5.0)
    (False, False)
    >>> tracker.went_silent(now=61.0)
    ['cart']
    >>> tracker.seen("cart", 0, now=62.0)    # True: it came back
    True
    >>> tracker.seen("search", 0, now=63.0); tracker.evict()
    False
    ['checkout']

Silence is judged on the wall clock (`now` is the daemon's monotonic clock), not on event
time: a service that stops sending has no event time to go by. Eviction takes *newcomers*
first (services with fewer than `protect_after_samples` samples, e.g. less than a window),
least recently seen first, and only then established services, least recently seen first:
a flood of unknown service names (a bad deploy, an attack) must not push out the services
whose windows took minutes to fill. Ordering by recency makes both checks cheap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class _Seen:
    partition: int
    last_seen: float
    silent: bool = False
    samples: int = 1


class ServiceTracker:
    def __init__(self, silence_seconds: float, max_services: int,
                 protect_after_samples: int = 1) -> None:
        self.silence_seconds = silence_seconds
        self.max_services = max_services
        self.protect_after_samples = protect_after_samples
        self._services: OrderedDict[str, _Seen] = OrderedDict()  # least recently seen first

    def seen(self, service: str, partition: int, now: float) -> bool:
        """Record a sample of `service` read from `partition`; True if it was silent."""
        entry = self._services.get(service)
        if entry is None:
            self._services[service] = _Seen(partition, now)
            return False
        came_back = entry.silent
        entry.partition, entry.last_seen, entry.silent = partition, now, False
        entry.samples += 1
        self._services.move_to_end(service)
        return came_back

    def went_silent(self, now: float) -> list[str]:
        """Services that have just passed `silence_seconds` without a sample."""
        newly = []
        for service, entry in self._services.items():
            if now - entry.last_seen < self.silence_seconds:
                break  # the rest were seen more recently
            if not entry.silent:
                entry.silent = True
                newly.append(service)
        return newly

    def evict(self) -> list[str]:
        """Forget the services beyond `max_services`, newcomers first; returns them."""
        over = len(self._services) - self.max_services
        if over <= 0:
            return []
        evicted = []
        for service, entry in self._services.items():  # least recently seen first
            if len(evicted) == over:
                break
            if entry.samples < self.protect_after_samples:
                evicted.append(service)
        if len(evicted) < over:  # not enough newcomers: established ones too
            chosen = set(evicted)
            for service in self._services:
                if len(evicted) == over:
                    break
                if service not in chosen:
                    evicted.append(service)
        for service in evicted:
            del self._services[service]
        return evicted

    def on_partitions(self, partitions: Iterable[int]) -> list[str]:
        wanted = set(partitions)
        return [s for s, entry in self._services.items() if entry.partition in wanted]

    def forget(self, services: Iterable[str]) -> None:
        for service in services:
            self._services.pop(service, None)

    def partition(self, service: str) -> int | None:
        entry = self._services.get(service)
        return None if entry is None else entry.partition

    def is_silent(self, service: str) -> bool:
        entry = self._services.get(service)
        return entry is not None and entry.silent

    def __len__(self) -> int:
        return len(self._services)

    def __contains__(self, service: str) -> bool:
        return service in self._services
