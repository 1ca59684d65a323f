"""`python -m dogbreeds repro`: a dvc.lock a kill cut short is moved aside, a sound one kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dogbreeds.commands.repro import lock_problem, repair_lock, repair_rwlock

SOUND = {
    "schema": "2.0",
    "stages": {
        "split": {
            "cmd": "PYTHONPATH=src python stages/split.py",
            "deps": [{"path": "data/merged", "hash": "md5", "md5": "a" * 32 + ".dir"}],
            "outs": [{"path": "data/split", "hash": "md5", "md5": "b" * 32 + ".dir"}],
        }
    },
}


def test_a_sound_lock_and_no_lock_are_left_alone(tmp_path: Path) -> None:
    lock = tmp_path / "dvc.lock"
    assert repair_lock(lock) is None  # none yet: a first run
    lock.write_text(yaml.safe_dump(SOUND))
    assert lock_problem(lock) is None and repair_lock(lock) is None
    assert yaml.safe_load(lock.read_text()) == SOUND


@pytest.mark.parametrize(
    ("cut", "problem"),
    [
        (0, "empty"),  # killed right after open(path, "w+")
        ("  stages:\n    split:\n      cmd: [", "not YAML"),
        ("schema: '2.0'\nstages:\n  split:\n    deps:\n", "not a lock file"),  # cut mid-entry
    ],
)
def test_a_lock_cut_short_is_moved_aside_with_one_line(tmp_path: Path, cut, problem) -> None:
    lock = tmp_path / "dvc.lock"
    text = yaml.safe_dump(SOUND)
    lock.write_text(text[:cut] if isinstance(cut, int) else cut)
    broken = lock.read_bytes()
    message = repair_lock(lock)
    assert message.startswith(f"{lock}: {problem}") and "\n" not in message
    assert not lock.exists()
    assert (tmp_path / "dvc.lock.broken").read_bytes() == broken  # kept for a post-mortem


@pytest.mark.parametrize("cut", ["", '{"read": {}, "wri'])
def test_a_dvc_rwlock_cut_short_is_moved_aside_and_a_sound_one_kept(tmp_path: Path, cut) -> None:
    rwlock = tmp_path / ".dvc" / "tmp" / "rwlock"
    assert repair_rwlock(rwlock) is None  # none: nothing to do
    rwlock.parent.mkdir(parents=True)
    rwlock.write_text('{"read": {}, "write": {}}')
    assert repair_rwlock(rwlock) is None and rwlock.exists()
    rwlock.write_text(cut)
    message = repair_rwlock(rwlock)
    assert message is not None and "moved to" in message and "rwlock.broken" in message
    assert not rwlock.exists() and (rwlock.parent / "rwlock.broken").read_text() == cut


def test_a_rwlock_under_dvcs_guard_is_left_to_its_writer(tmp_path: Path) -> None:
    import zc.lockfile

    rwlock = tmp_path / "rwlock"
    rwlock.write_text("")  # being written this instant by a DVC process holding the guard
    guard = zc.lockfile.LockFile(str(tmp_path / "rwlock.lock"))
    try:
        assert repair_rwlock(rwlock) is None and rwlock.exists()
    finally:
        guard.close()
