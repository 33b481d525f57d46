"""The topology file, reloaded when it changes, without a restart.

    >>> watcher = TopologyWatcher(config, registry=prometheus_registry)
    >>> topology = watcher.poll(now=time.monotonic())   # the main loop, before each poll
    >>> if topology is not None:
    ...     pipeline.set_topology(topology)

At most every `CHECK_INTERVAL_SECONDS` the watcher compares the file's mtime and size with
those it last read (`sentinel.daemon.file_watch`); when they differ it reads and validates
the file again (the inline `topology:` map is merged in, as at start-up). A file that no
longer reads or validates is refused: logged, counted in
``sentinel_topology_reloads_total{outcome="refused"}``, and the topology in force stays
until the file changes again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from sentinel.config.load import effective_topology, topology_warnings
from sentinel.config.schema import Config
from sentinel.core.topology import Topology
from sentinel.daemon.file_watch import ChangedFile
from sentinel.errors import ConfigError

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 5.0


class TopologyWatcher:
    def __init__(self, config: Config, registry: CollectorRegistry | None = None,
                 check_interval_seconds: float = CHECK_INTERVAL_SECONDS) -> None:
        self.config = config
        self.path = Path(config.topology_file) if config.topology_file else None
        self._file = ChangedFile(self.path, check_interval_seconds) if self.path else None
        self.reloads = Counter("sentinel_topology_reloads_total",
                               "Topology file reloads after a change, by outcome", ["outcome"],
                               registry=registry)
        for outcome in ("applied", "refused"):
            self.reloads.labels(outcome)

    def poll(self, now: float) -> Topology | None:
        """The new topology when the file changed since the last read, else None; never raises."""
        if self._file is None or not self._file.changed(now):
            return None
        try:
            topology = effective_topology(self.config)
            warnings = topology_warnings(self.config)
        except ConfigError as exc:
            self.reloads.labels("refused").inc()
            log.error("topology file %s refused, keeping the topology in force: %s", self.path, exc)
            return None
        self.reloads.labels("applied").inc()
        log.info("topology reloaded from %s: %d callers", self.path, len(topology.edges))
        for warning in warnings:
            log.warning("topology: %s", warning)
        return topology
