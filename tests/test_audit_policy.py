"""The dependency-audit policy of scripts/audit_deps.py, on canned pip-audit reports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from audit_deps import evaluate, read_ignores

REPORT = {"dependencies": [
    {"name": "pyyaml", "version": "6.0.4", "vulns": []},
    {"name": "urllib3", "version": "1.26.0", "vulns": [
        {"id": "GHSA-v845-jxx5-vc9f", "aliases": ["CVE-2023-43804"], "fix_versions": ["1.26.17"]},
        {"id": "PYSEC-0000-1", "aliases": [], "fix_versions": []},
    ]},
    {"name": "numpy", "version": "2.4.6", "vulns": [
        {"id": "PYSEC-0000-2", "aliases": ["CVE-0000-2"], "fix_versions": ["2.4.7"]}]},
    {"name": "secret-internal", "skip_reason": "Dependency not found on PyPI"},
]}


def test_fixable_vulnerability_fails_unless_ignored_with_a_reason() -> None:
    verdict = evaluate(REPORT, read_ignores("CVE-0000-2  not reachable: we never call np.load\n"))

    assert verdict.failing == ["urllib3==1.26.0: GHSA-v845-jxx5-vc9f / CVE-2023-43804: fixed in 1.26.17"]
    assert verdict.unfixed == ["urllib3==1.26.0: PYSEC-0000-1: no fixed version yet"]
    assert verdict.ignored == ["numpy==2.4.6: PYSEC-0000-2 / CVE-0000-2 (ignored: not reachable: "
                               "we never call np.load)"]
    assert verdict.skipped == ["secret-internal: Dependency not found on PyPI"]
    assert verdict.audited == 3 and verdict.reached_service


def test_a_clean_report_passes() -> None:
    verdict = evaluate({"dependencies": [{"name": "pyyaml", "version": "6.0.4", "vulns": []}]}, {})

    assert (verdict.failing, verdict.unfixed, verdict.audited) == ([], [], 1)


def test_unreachable_service_audits_nothing() -> None:
    report = {"dependencies": [{"name": n, "skip_reason": "Dependency not found on PyPI"}
                               for n in ("numpy", "pyyaml")]}

    assert not evaluate(report, {}).reached_service


def test_ignore_entry_needs_a_reason() -> None:
    assert read_ignores("# comment\n\nCVE-1  because\n") == {"CVE-1": "because"}
    with pytest.raises(ValueError, match="CVE-2 has no reason"):
        read_ignores("CVE-2\n")


def test_the_shipped_ignore_file_parses() -> None:
    ignore = Path(__file__).resolve().parents[1] / ".ci" / "pip-audit-ignore.txt"

    read_ignores(ignore.read_text())
