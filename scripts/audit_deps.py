"""Audit the locked runtime dependencies with pip-audit, and apply Sentinel's policy.

    .venv/bin/python scripts/audit_deps.py                  # what CI runs (.ci/run)
    .venv/bin/python scripts/audit_deps.py --report out.json # pip-audit's JSON kept too

Policy (docs/security.md):
- FAIL: a runtime dependency (requirements.lock) has a known vulnerability with a fixed
  version available, and the vulnerability is not in .ci/pip-audit-ignore.txt.
- report only: vulnerabilities with no fix yet (nothing to upgrade to), ignored ones (with
  the reason from the ignore file), dependencies the service does not know.
- NOT AUDITED, exit 0: no vulnerability service answered (no network, or a registry
  mirror without PyPI's JSON API). CI says so loudly instead of failing for it.

Where pip-audit's services do not answer but PyPI's package JSON does (some registry proxies
serve /pypi/<name>/json but not /pypi/<name>/<version>/json, which pip-audit needs), the
locked versions that are PyPI's latest release are audited from that JSON's
`vulnerabilities` (the latest release's advisories); the others are reported not audited.

The ignore file: one vulnerability id (or alias, e.g. a CVE) per line, then its reason;
`#` starts a comment. An entry without a reason is an error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
IGNORE = ROOT / ".ci" / "pip-audit-ignore.txt"
SERVICES = ("pypi", "osv")  # tried in order until one answers
TIMEOUT_SECONDS = 300
PYPI_JSON = "https://pypi.org/pypi/{name}/json"


@dataclass
class Verdict:
    failing: list[str] = field(default_factory=list)  # fixable, not ignored: fail the build
    unfixed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not audited, with pip-audit's reason
    audited: int = 0

    @property
    def reached_service(self) -> bool:
        return self.audited > 0


def read_ignores(text: str) -> dict[str, str]:
    """id -> reason; ValueError for an entry without a reason."""
    ignores = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        vuln_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise ValueError(f"{IGNORE.name} line {number}: {vuln_id} has no reason; "
                             "say why it does not apply or cannot be fixed yet")
        ignores[vuln_id] = reason.strip()
    return ignores


def evaluate(report: dict, ignores: dict[str, str]) -> Verdict:
    """Apply the policy to pip-audit's JSON report (`-f json`)."""
    verdict = Verdict()
    for dep in report.get("dependencies", []):
        name = f"{dep['name']}=={dep['version']}" if "version" in dep else dep["name"]
        if "skip_reason" in dep:
            verdict.skipped.append(f"{name}: {dep['skip_reason']}")
            continue
        verdict.audited += 1
        for vuln in dep.get("vulns", []):
            ids = [vuln["id"], *vuln.get("aliases", [])]
            line = f"{name}: {' / '.join(ids)}"
            fixes = vuln.get("fix_versions") or []
            reason = next((ignores[i] for i in ids if i in ignores), None)
            if reason is not None:
                verdict.ignored.append(f"{line} (ignored: {reason})")
            elif fixes:
                verdict.failing.append(f"{line}: fixed in {', '.join(fixes)}")
            else:
                verdict.unfixed.append(f"{line}: no fixed version yet")
    return verdict


def run_pip_audit(service: str, lock: Path) -> tuple[dict | None, str]:
    """pip-audit's report, or None and why there is none."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip_audit", "-r", str(lock), "--no-deps",
                   "--disable-pip", "--progress-spinner", "off", "-s", service, "-f", "json",
                   "-o", str(out)]
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            return None, f"{service}: no answer within {TIMEOUT_SECONDS}s"
        if out.is_file() and out.stat().st_size:
            return json.loads(out.read_text()), ""
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"{service}: pip-audit exited {done.returncode}: {tail[0][:300]}"


def fetch_pypi_json(name: str) -> dict:
    with urllib.request.urlopen(PYPI_JSON.format(name=name), timeout=20) as response:
        return json.load(response)


def latest_release_report(lock: Path, fetch: Callable[[str], dict] = fetch_pypi_json,
                          budget_seconds: float = 120.0) -> dict:
    """A pip-audit-shaped report from PyPI's package JSON: the pins that are the latest
    release get that release's advisories; the others are skipped with the reason."""
    dependencies = []
    deadline = time.monotonic() + budget_seconds  # a network that swallows requests
    for line in lock.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if not sep:
            continue
        if time.monotonic() > deadline:
            dependencies.append({"name": name, "skip_reason": f"over {budget_seconds:.0f} s"})
            continue
        try:
            doc = fetch(name)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            dependencies.append({"name": name, "skip_reason": f"PyPI JSON: {exc}"})
            continue
        latest = doc.get("info", {}).get("version")
        if latest != version:
            dependencies.append({"name": name, "skip_reason": f"{version} is not PyPI's latest "
                                 f"release ({latest}): its advisories are not in the package JSON"})
            continue
        if "vulnerabilities" not in doc:
            dependencies.append({"name": name, "skip_reason": "no vulnerability data in PyPI JSON"})
            continue
        vulns = [{"id": v["id"], "aliases": v.get("aliases") or [],
                  "fix_versions": v.get("fixed_in") or []}
                 for v in doc.get("vulnerabilities") or [] if not v.get("withdrawn")]
        dependencies.append({"name": name, "version": version, "vulns": vulns})
    return {"dependencies": dependencies}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--report", type=Path, help="also write pip-audit's JSON report here")
    args = parser.parse_args()
    ignores = read_ignores(IGNORE.read_text()) if IGNORE.is_file() else {}
    problems = []
    for service in SERVICES:
        report, problem = run_pip_audit(service, args.lock)
        verdict = evaluate(report, ignores) if report is not None else None
        if verdict is not None and verdict.reached_service:
            break
        problems.append(problem or f"{service}: no dependency could be looked up "
                        f"({(verdict.skipped if verdict else ['?'])[0]})")
    else:
        service = "pypi-latest"  # PyPI's package JSON, for the pins that are the latest release
        report = latest_release_report(args.lock)
        verdict = evaluate(report, ignores)
        if not verdict.reached_service:
            problems.append(f"{service}: no dependency could be looked up "
                            f"({(verdict.skipped or ['?'])[0]})")
    if not verdict or not verdict.reached_service:
        print("pip-audit: NOT AUDITED - no vulnerability service answered:")
        for problem in problems:
            print(f"  {problem}")
        print(f"  {sum(1 for line in args.lock.read_text().splitlines() if '==' in line)} "
              "runtime dependencies unchecked; not failing the build for it")
        return 0
    if args.report:
        args.report.write_text(json.dumps(report, indent=1))
    print(f"pip-audit ({service}): {verdict.audited} runtime dependencies audited")
    for title, lines in (("FAIL (fix available)", verdict.failing),
                         ("no fix yet", verdict.unfixed), ("ignored", verdict.ignored),
                         ("not audited", verdict.skipped)):
        for line in lines:
            print(f"  {title}: {line}")
    if verdict.failing:
        print(f"pip-audit: {len(verdict.failing)} fixable vulnerabilities in runtime dependencies: "
              "upgrade them (and re-run scripts/lock_runtime.py) or list them with a reason in "
              f"{IGNORE.relative_to(ROOT)}")
        return 1
    print("pip-audit: no fixable vulnerability in runtime dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
