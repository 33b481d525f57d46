"""The shared mechanisms at the root: the atomic writer and the log throttle."""

from __future__ import annotations

import logging

import pytest

from sentinel.atomic import atomic_dir, write_atomic
from sentinel.logs import LogThrottle


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "hints.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hints.json"]


def test_atomic_dir_keeps_the_old_directory_when_the_block_fails(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("crash while writing")
    assert (out / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    with atomic_dir(out) as tmp:
        (tmp / "weights").write_text("new")
    assert (out / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_recurring_problem_is_logged_once_a_minute_until_reset(caplog):
    throttle = LogThrottle(logging.getLogger("sentinel.test"))
    with caplog.at_level(logging.WARNING, "sentinel.test"):
        logged = [throttle.log(now, logging.WARNING, "trouble %d", now)
                  for now in (1000, 1010, 1059, 1060, 1100)]
        assert logged == [True, False, False, True, False]
        assert throttle.active
        throttle.reset()
        assert not throttle.active
        assert throttle.log(1101, logging.WARNING, "trouble %d", 1101)
    assert [r.getMessage() for r in caplog.records] == ["trouble 1000", "trouble 1060", "trouble 1101"]
