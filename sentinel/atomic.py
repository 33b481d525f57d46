"""Atomic writes: a crash (or a power loss) leaves either the old or the new content, never
half of it. The one mechanism behind the outbox, the registry pointer, rebuild hints and
model artifacts.

    >>> write_atomic(state / "rebuild-hints.json", json.dumps(doc).encode())
    >>> with atomic_dir(out) as tmp:          # a temporary sibling of `out`
    ...     (tmp / "metadata.json").write_text(...)
    >>> # `out` is now the new directory; an exception left `out` as it was
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"  # `.<name>.tmp`: a leftover of a crash is recognisable and skipped


def fsync_dir(path: Path, *, strict: bool = True) -> None:
    """Make a rename in `path` durable (a power loss must not bring the old name back).
    `strict=False` ignores a file system that cannot fsync a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if strict:
            raise


def write_atomic(path: Path, data: bytes, *, strict: bool = True) -> None:
    """Replace `path` with `data`: written to `.<name>.tmp`, fsynced, renamed over `path`,
    the directory fsynced. Raises OSError (the temporary file removed); `strict=False`
    tolerates a directory that cannot be fsynced."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent, strict=strict)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """A temporary sibling directory to fill; when the block ends without an exception it
    replaces `out` (an old `out` is renamed aside, then deleted), otherwise it is deleted."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
