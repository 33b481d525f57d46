"""Context channels: per-step model inputs that do not come from the service's own window.

    >>> layout = ContextLayout.from_metadata({"context": ["topology"],
    ...                                       "context_channels": {"topology": ["a", "b"]}})
    >>> x = with_context(scaler.prepare(raw, specs), layout.build(batch, {"topology": provider}))

A model's input is ``concat([scaler.prepare(raw windows), context], axis=-1)``, where
`context` is ``(n, window_steps, k)`` float32 made by *providers* in the fixed order the
model recorded (metadata key ``"context"``: provider names; ``"context_channels"``: each
provider's channel names). Each provider lives in its own module (`sentinel.core.topology`,
`sentinel.core.calendar`), emits its channels already bounded (the Scaler is not refitted
for them) and has a fixed width whatever the number of dependencies or events.

The neutral value of every channel of every provider is 0: a model is always fed exactly the
channels it records, and a provider that is not configured where the model serves (or has
nothing to say about a window) contributes zeros, never a crash. A provider configured but
not recorded by the model is ignored for that model. A model without ``"context"`` (every
model from before this mechanism) gets no context at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sentinel.errors import ModelError

NEUTRAL = 0.0
PROVIDER_ORDER = ("topology", "calendar")  # the order of providers in a model's input


@dataclass(frozen=True, slots=True, eq=False)
class ContextBatch:
    """The windows of one scoring call, as providers see them."""

    services: tuple[str, ...]
    ts: np.ndarray  # (n,) int64: start of each window's last step
    step_seconds: int
    window_steps: int

    def __len__(self) -> int:
        return len(self.services)

    def step_ts(self) -> np.ndarray:
        """(n, window_steps) int64: the start of every step of every window."""
        offsets = (np.arange(self.window_steps, dtype=np.int64) - (self.window_steps - 1))
        return np.asarray(self.ts, np.int64)[:, None] + offsets * self.step_seconds


class ContextProvider(Protocol):
    """One group of context channels. `build` is called once per scoring call, with every
    window of the call; it must not block and returns bounded float32 values."""

    name: str

    def channels(self) -> tuple[str, ...]:
        """The channel names, fixed for the provider's configuration."""
        ...

    def build(self, batch: ContextBatch) -> np.ndarray:
        """(len(batch), window_steps, len(channels())) float32."""
        ...


@dataclass(frozen=True)
class ContextLayout:
    """Which providers a model expects, in order, and their channels."""

    providers: tuple[str, ...] = ()
    channels: tuple[tuple[str, ...], ...] = ()

    @property
    def width(self) -> int:
        return sum(len(c) for c in self.channels)

    def __contains__(self, provider: str) -> bool:
        return provider in self.providers

    def channels_of(self, provider: str) -> tuple[str, ...]:
        return self.channels[self.providers.index(provider)] if provider in self else ()

    @classmethod
    def of(cls, parts: Mapping[str, tuple[str, ...]]) -> ContextLayout:
        """A layout in PROVIDER_ORDER from provider name -> channel names."""
        unknown = set(parts) - set(PROVIDER_ORDER)
        if unknown:
            raise ValueError(f"unknown context providers {sorted(unknown)}; known: "
                             f"{list(PROVIDER_ORDER)}")
        names = tuple(p for p in PROVIDER_ORDER if p in parts)
        return cls(names, tuple(tuple(parts[p]) for p in names))

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ContextLayout:
        """The layout a model's metadata records; ModelError when it is malformed."""
        providers = metadata.get("context") or []
        channels = metadata.get("context_channels") or {}
        if not isinstance(providers, list) or not isinstance(channels, dict):
            raise ModelError(f"metadata context {providers!r} / context_channels "
                             f"{type(channels).__name__}: expected a list and a mapping")
        parts = []
        for name in providers:
            names = channels.get(name)
            if not isinstance(names, list) or not names:
                raise ModelError(f"metadata context_channels has no channel list for the "
                                 f"context provider {name!r}")
            parts.append(tuple(map(str, names)))
        return cls(tuple(map(str, providers)), tuple(parts))

    def to_metadata(self) -> dict[str, Any]:
        return {"context": list(self.providers),
                "context_channels": {p: list(c) for p, c in zip(self.providers, self.channels,
                                                                strict=True)}}

    def build(self, batch: ContextBatch, available: Mapping[str, ContextProvider]
              ) -> np.ndarray | None:
        """The context of `batch`: None for a model without one; neutral channels for a
        recorded provider that is not `available`."""
        if not self.providers:
            return None
        parts = []
        for name, channels in zip(self.providers, self.channels, strict=True):
            provider = available.get(name)
            shape = (len(batch), batch.window_steps, len(channels))
            if provider is None:
                parts.append(np.full(shape, NEUTRAL, np.float32))
                continue
            values = np.asarray(provider.build(batch), np.float32)
            if values.shape != shape:
                raise ValueError(f"context provider {name!r} built {values.shape}, the model "
                                 f"expects {shape}")
            parts.append(values)
        return np.concatenate(parts, axis=-1)

    def neutral(self, n: int, window_steps: int) -> np.ndarray | None:
        if not self.providers:
            return None
        return np.full((n, window_steps, self.width), NEUTRAL, np.float32)


def with_context(prepared: np.ndarray, context: np.ndarray | None) -> np.ndarray:
    """The model's input: the prepared own windows, then the context channels."""
    if context is None:
        return prepared
    if context.shape[:2] != prepared.shape[:2]:
        raise ValueError(f"context of shape {context.shape} for windows of shape {prepared.shape}")
    return np.concatenate([prepared, context.astype(prepared.dtype, copy=False)], axis=-1)
