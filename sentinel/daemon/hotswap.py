"""Hot swap: notice a newly promoted model, load it off the main loop, hand it over between polls.

    >>> watcher = ModelWatcher(registry, config, serving=model, metrics=prometheus_registry)
    >>> new = watcher.poll(now=time.monotonic())   # the main loop, before each poll; never blocks
    >>> if new is not None:
    ...     pipeline.swap_model(new.scorer, new.alerting(config))

Every `model.check_interval` the watcher reads the registry's `current` pointer (or, for a
single model directory, its metadata.json). When it names another model than the one in
service, a background thread loads and verifies it (checksums, schema, weights) and traces
the scoring call once, so the first poll after the swap is not slowed by tracing. The next
`poll()` returns it; the caller swaps it in between two polls, so every bucket is scored by
exactly one of the two models. A model that fails to load is refused: logged, counted in
`sentinel_model_swaps_total{outcome="refused"}`, and not tried again until the pointer
changes; the model in service keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from sentinel.config.schema import Config
from sentinel.core.features import tracked_metrics
from sentinel.errors import ModelError
from sentinel.model.artifact import LoadedModel, load_model
from sentinel.retrain.registry import ModelRegistry, Target

log = logging.getLogger(__name__)

SWAP_OUTCOMES = ("swapped", "refused")


class ModelWatcher:
    def __init__(self, registry: ModelRegistry, config: Config, serving: LoadedModel | None,
                 metrics: CollectorRegistry, loader: Callable[[Path, Config], LoadedModel] = load_model,
                 check_interval_seconds: float | None = None) -> None:
        self.registry, self.config, self.loader = registry, config, loader
        self.check_interval_seconds = (config.model.check_interval_seconds
                                       if check_interval_seconds is None else check_interval_seconds)
        self.swaps = Counter("sentinel_model_swaps_total",
                             "Newly promoted models swapped in, or refused (unusable)",
                             ["outcome"], registry=metrics)
        for outcome in SWAP_OUTCOMES:
            self.swaps.labels(outcome)
        self._serving = None if serving is None else Target(serving.path, serving.version)
        self._refused: Target | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None
        self._loaded: tuple[Target, LoadedModel | ModelError] | None = None

    @property
    def serving(self) -> Target | None:
        """The model in service (what the retrainer compares a candidate with)."""
        with self._lock:
            return self._serving

    def poll(self, now: float) -> LoadedModel | None:
        """A verified model to swap in now, or None. Called between polls; never blocks."""
        with self._lock:
            loaded, self._loaded = self._loaded, None
        if loaded is not None:
            return self._take(*loaded)
        if now < self._next_check or self._loading is not None:
            return None
        self._next_check = now + self.check_interval_seconds
        try:
            target = self.registry.current()
        except ModelError as exc:  # e.g. a hand-edited pointer: say so once, keep serving
            self._refuse(Target(self.registry.root, "(unreadable pointer)"), exc)
            return None
        if target is None or target in (self.serving, self._refused):
            return None
        log.info("model %s promoted: loading it in the background", target.version)
        self._loading = threading.Thread(target=self._load, args=(target,), daemon=True,
                                         name="sentinel-model-load")
        self._loading.start()
        return None

    def wait_loaded(self, timeout_seconds: float) -> None:
        """Block until a background load in flight finished (tests, shutdown)."""
        thread = self._loading
        if thread is not None:
            thread.join(timeout_seconds)

    def _load(self, target: Target) -> None:
        started = time.monotonic()
        try:
            model = self.loader(target.path, self.config)
            # trace the compiled call now, off the main loop
            model.scorer.score(np.zeros((1, self.config.window_steps,
                                         len(tracked_metrics(self.config)))))
            result: LoadedModel | ModelError = model
        except ModelError as exc:
            result = exc
        except Exception as exc:  # a bug or an odd file must not kill the daemon: refuse it
            result = ModelError(f"model {target.path}: cannot load: {exc!r}")
        log.debug("loading model %s took %.2fs", target.version, time.monotonic() - started)
        with self._lock:
            self._loaded = (target, result)

    def _take(self, target: Target, result: LoadedModel | ModelError) -> LoadedModel | None:
        self._loading = None
        if isinstance(result, ModelError):
            self._refuse(target, result)
            return None
        with self._lock:
            previous, self._serving = self._serving, target
        self._refused = None
        self.swaps.labels("swapped").inc()
        log.info("model %s swapped in (was %s)", target.version,
                 previous.version if previous else "none",
                 extra={"fields": {"event": "model_swap", "version": target.version,
                                   "previous": previous.version if previous else None}})
        return result

    def _refuse(self, target: Target, exc: ModelError) -> None:
        if target == self._refused:
            return
        self._refused = target
        self.swaps.labels("refused").inc()
        log.error("refusing model %s, the model in service (%s) keeps serving: %s",
                  target.version, self.serving.version if self.serving else "none", exc,
                  extra={"fields": {"event": "model_refused", "version": target.version}})
