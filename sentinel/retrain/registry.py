"""The model registry: versioned model directories and an atomically switched `current` pointer.

    >>> registry = ModelRegistry("/var/lib/sentinel/models", keep_versions=5)
    >>> version = registry.add(Path("/tmp/new-model"))     # moved to versions/<version>/
    >>> registry.promote(version, config)                  # verified, then the pointer switches
    >>> registry.rollback(config)                          # back to the version before it

Layout under `model.path`:

    versions/<version>/   one artifact each, as `sentinel train` writes it (sentinel.model.artifact)
    current               {"version": ..., "previous": [...], "updated_ts": ...}: written to a
                          temporary file, fsynced and renamed over the old one, so a reader
                          sees the old pointer or the new one, never half of one
    .incoming/            candidates being trained or imported (never served)
    .lock                 serialises pointer updates (the daemon's retrainer and the CLI)

`previous` lists the versions served before, newest first: `rollback` goes back one step.
Pruning keeps the `keep_versions` newest versions (by name: versions start with their UTC
training time) plus the current one and its rollback target.

A `model.path` that is itself a model directory (metadata.json in it) is served as before;
`promote` and `rollback` refuse it with instructions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel.atomic import fsync_dir, write_atomic
from sentinel.config.schema import Config
from sentinel.errors import ModelError
from sentinel.model.artifact import METADATA, verify_artifact

log = logging.getLogger(__name__)

VERSIONS, POINTER, INCOMING, LOCK = "versions", "current", ".incoming", ".lock"


@dataclass(frozen=True)
class Target:
    """What the pointer designates: the directory to serve and its version."""

    path: Path
    version: str


@dataclass(frozen=True)
class VersionInfo:
    version: str
    path: Path
    current: bool
    metadata: dict[str, Any] | None  # None when metadata.json is unreadable


class ModelRegistry:
    def __init__(self, root: str | Path, keep_versions: int = 5) -> None:
        self.root = Path(root)
        self.keep_versions = keep_versions

    # --- reading (cheap: the daemon checks every few seconds) ---

    @property
    def is_registry(self) -> bool:
        """model.path is (or is becoming) a registry: it has versions/ or a pointer."""
        return not self.is_single_model and ((self.root / VERSIONS).is_dir()
                                             or (self.root / POINTER).exists())

    @property
    def is_single_model(self) -> bool:
        """model.path is a plain model directory, not a registry."""
        return (self.root / METADATA).is_file()

    def pointer(self) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.root / POINTER).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ModelError(f"model registry {self.root}: unreadable {POINTER} pointer: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("version"), str):
            raise ModelError(f"model registry {self.root}: {POINTER} holds no version: {doc!r}")
        version = doc["version"]
        if version in ("", ".", "..") or "/" in version or "\\" in version:
            # a pointer must not lead out of versions/ to a directory nobody promoted
            raise ModelError(f"model registry {self.root}: {POINTER} names {version!r}, which is "
                             f"not a version directory name")
        return doc

    def current(self) -> Target | None:
        """The model to serve, or None when there is none yet (ModelError: bad pointer)."""
        if self.is_single_model:
            try:
                version = str(json.loads((self.root / METADATA).read_text()).get("version"))
            except (OSError, ValueError, AttributeError):
                version = "unknown"  # load_model says what is wrong with it
            return Target(self.root, version)
        doc = self.pointer()
        if doc is None:
            return None
        return Target(self.root / VERSIONS / doc["version"], doc["version"])

    def versions(self) -> list[VersionInfo]:
        """Every version directory, oldest first."""
        if self.is_single_model:
            current = self.current()
            assert current is not None
            return [VersionInfo(current.version, self.root, True, _metadata(self.root))]
        doc = self.pointer()
        current = doc["version"] if doc else None
        return [VersionInfo(p.name, p, p.name == current, _metadata(p)) for p in self._dirs()]

    # --- writing ---

    def add(self, artifact: Path, copy: bool = False) -> str:
        """Move (or copy) a model directory into versions/<its version>/; returns the version.

        The directory appears under versions/ in one rename, complete or not at all.
        """
        self._refuse_single_model("add a version to")
        artifact = Path(artifact)
        try:
            version = str(json.loads((artifact / METADATA).read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{artifact} is no model directory (sentinel train writes one): "
                             f"{exc}") from exc
        if not version or "/" in version or version.startswith("."):
            raise ModelError(f"{artifact}: unusable version {version!r} in {METADATA}")
        dest = self.root / VERSIONS / version
        if dest.exists():
            raise ModelError(f"version {version} is already in {self.root / VERSIONS}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            staging = self.staging_dir("import")
            shutil.copytree(artifact, staging / version)
            artifact = staging / version
        try:
            os.rename(artifact, dest)
        except OSError:  # another file system: copy next to it, then rename
            if copy:
                raise
            return self.add(artifact, copy=True)
        finally:
            if copy:
                shutil.rmtree(artifact.parent, ignore_errors=True)
        fsync_dir(dest.parent, strict=False)
        return version

    def promote(self, version: str, config: Config) -> dict[str, Any]:
        """Verify the version's artifact against `config`, then point `current` at it."""
        self._refuse_single_model("promote in")
        path = self.root / VERSIONS / version
        if not path.is_dir():
            known = ", ".join(v.version for v in self.versions()) or "none"
            raise ModelError(f"no version {version!r} in {self.root / VERSIONS} (versions: {known})")
        verify_artifact(path, config)  # a tampered or mismatched model is never pointed at
        with self._locked():
            doc = self.pointer()
            previous = [] if doc is None else [doc["version"], *doc.get("previous", [])]
            previous = [v for v in dict.fromkeys(previous) if v != version]
            new = {"version": version, "previous": previous[:_HISTORY_LENGTH],
                   "updated_ts": round(time.time(), 3)}
            self._write_pointer(new)
        log.info("model %s promoted in %s (was %s)", version, self.root,
                 previous[0] if previous else "none",
                 extra={"fields": {"event": "model_promoted", "version": version,
                                   "previous": previous[0] if previous else None}})
        self.prune()
        return new

    def rollback(self, config: Config) -> dict[str, Any]:
        """Point `current` back at the version served before it (verified first)."""
        self._refuse_single_model("roll back in")
        with self._locked():
            doc = self.pointer()
            if doc is None:
                raise ModelError(f"model registry {self.root} has no current model to roll back")
            previous = [v for v in doc.get("previous", []) if (self.root / VERSIONS / v).is_dir()]
            if not previous:
                raise ModelError(f"model registry {self.root}: no earlier version to roll back to "
                                 f"(current {doc['version']})")
            target = previous[0]
            verify_artifact(self.root / VERSIONS / target, config)
            new = {"version": target, "previous": previous[1:], "rolled_back_from": doc["version"],
                   "updated_ts": round(time.time(), 3)}
            self._write_pointer(new)
        log.info("model rolled back from %s to %s in %s", doc["version"], target, self.root,
                 extra={"fields": {"event": "model_rolled_back", "version": target,
                                   "previous": doc["version"]}})
        return new

    def prune(self) -> list[str]:
        """Delete all but the newest `keep_versions`, the current one and its rollback target."""
        doc = self.pointer() or {}
        keep = {doc.get("version"), *doc.get("previous", [])[:1]}
        dirs = self._dirs()
        keep |= {p.name for p in dirs[-self.keep_versions:]}
        removed = []
        for path in dirs:
            if path.name not in keep:
                # renamed first: a half-deleted directory must never look like a version
                trash = self.staging_dir("trash")
                path.rename(trash / path.name)
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(path.name)
        if removed:
            log.info("pruned model versions %s (keeping %d)", ", ".join(removed), len(keep))
        return removed

    def staging_dir(self, purpose: str) -> Path:
        """A fresh directory under .incoming/ (same file system as versions/, so renames work)."""
        base = self.root / INCOMING
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{purpose}-", dir=base))

    def clean_incoming(self) -> None:
        """Remove leftovers of candidates whose job died (one retrainer per registry)."""
        shutil.rmtree(self.root / INCOMING, ignore_errors=True)

    # --- internals ---

    def _dirs(self) -> list[Path]:
        base = self.root / VERSIONS
        if not base.is_dir():
            return []
        return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _refuse_single_model(self, what: str) -> None:
        if self.is_single_model:
            raise ModelError(
                f"model.path {self.root} is a single model directory, not a registry: cannot "
                f"{what} it. To use the registry, point model.path at a new directory and run "
                f"`sentinel models promote {self.root}` (it imports the model as a version)")

    def _write_pointer(self, doc: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / POINTER, json.dumps(doc, indent=1).encode(), strict=False)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


_HISTORY_LENGTH = 20  # rollback steps remembered in the pointer


def _metadata(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((path / METADATA).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
