"""Write requirements.lock: the runtime dependencies of Sentinel, pinned as installed.

    .venv/bin/python scripts/lock_runtime.py            # rewrites requirements.lock
    .venv/bin/python scripts/lock_runtime.py --check    # exit 1 if it is out of date

The closure of `[project] dependencies` in pyproject.toml (no dev extras), resolved from the
installed environment, one `name==version` a line. It is what `pip-audit` checks in CI
(scripts/audit_deps.py): the packages a production install actually runs.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
HEADER = ("# Runtime dependencies of Sentinel, pinned as resolved in the development venv.\n"
          "# Regenerate: .venv/bin/python scripts/lock_runtime.py  (audited in CI by "
          "scripts/audit_deps.py)\n")


def runtime_closure(roots: list[str]) -> dict[str, str]:
    """canonical name -> installed version, for `roots` and everything they need here."""
    pinned: dict[str, str] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in pinned:
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{requirement.name} is a runtime dependency but is not installed; "
                     "run scripts/setup first")
        pinned[name] = dist.version
        todo += [Requirement(r) for r in dist.requires or []]
    return pinned


def render() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = runtime_closure(project["dependencies"])
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the lock is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if LOCK.read_text() != text:
            print("requirements.lock is out of date: run scripts/lock_runtime.py", file=sys.stderr)
            return 1
        return 0
    LOCK.write_text(text)
    print(f"wrote {LOCK.name}: {text.count('==')} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
