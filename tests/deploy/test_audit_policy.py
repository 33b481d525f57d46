"""The dependency-audit policy of scripts/audit_deps.py, on canned pip-audit reports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from audit_deps import evaluate, latest_release_report, read_ignores

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
    ignore = Path(__file__).resolve().parents[2] / ".ci" / "pip-audit-ignore.txt"

    read_ignores(ignore.read_text())


def test_pins_that_are_the_latest_release_are_audited_from_pypis_package_json(tmp_path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("# pinned\nkeras==3.15.1\nnumpy==2.4.6\npyyaml==6.0.4\nmirror-only==1.0\n"
                    "stripped==2.0\n")
    pypi = {
        "keras": {"info": {"version": "3.15.1"}, "vulnerabilities": [
            {"id": "GHSA-aaaa", "aliases": ["CVE-2026-1"], "fixed_in": [], "withdrawn": None},
            {"id": "GHSA-bbbb", "aliases": [], "fixed_in": ["3.15.0"], "withdrawn": "2026-01-01"}]},
        "numpy": {"info": {"version": "2.5.5"}, "vulnerabilities": []},
        "pyyaml": {"info": {"version": "6.0.4"}, "vulnerabilities": []},
        "stripped": {"info": {"version": "2.0"}},  # a proxy that drops the field
    }

    def fetch(name: str) -> dict:
        if name not in pypi:
            raise OSError("HTTP Error 404: Not Found")
        return pypi[name]

    verdict = evaluate(latest_release_report(lock, fetch), {})

    assert verdict.audited == 2  # keras and pyyaml: the latest releases
    assert verdict.unfixed == ["keras==3.15.1: GHSA-aaaa / CVE-2026-1: no fixed version yet"]
    assert verdict.failing == []  # the withdrawn advisory does not count
    assert [line.split(":")[0] for line in verdict.skipped] == ["numpy", "mirror-only", "stripped"]
    assert "not PyPI's latest release (2.5.5)" in verdict.skipped[0]
