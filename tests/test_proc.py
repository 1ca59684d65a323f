"""The one git/DVC subprocess helper (common/proc.py) and the one flatten (common/dotted.py)."""

from __future__ import annotations

import dvc

from dogbreeds.common import proc
from dogbreeds.common.dotted import flatten, set_keys


def test_git_runs_in_the_named_repository_and_says_none_outside_one(tmp_path):
    assert proc.git_output(tmp_path, "rev-parse", "HEAD") is None  # not a repository
    assert proc.git(tmp_path, "init", "-q").returncode == 0
    who = ["-c", "user.name=t", "-c", "user.email=t@localhost"]
    assert proc.git(tmp_path, *who, "commit", "-q", "--allow-empty", "-m", "x").returncode == 0
    head = proc.git_output(tmp_path, "rev-parse", "HEAD")
    assert head is not None and len(head.strip()) == 40
    # input goes to git's stdin: the commit object's id, back through cat-file
    batch = proc.git(tmp_path, "cat-file", "--batch-check=%(objectname)", input="HEAD\n")
    assert batch.stdout.strip() == head.strip()


def test_git_missing_reads_as_a_failed_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    done = proc.git(tmp_path, "status")
    assert done.returncode == 127 and done.stderr
    assert proc.git_output(tmp_path, "status") is None


def test_dvc_runs_this_environments_dvc(tmp_path):
    done = proc.dvc(tmp_path, "--version")
    assert done.returncode == 0 and done.stdout.strip() == dvc.__version__


def test_flatten_gives_every_leaf_its_dotted_key_and_set_keys_undoes_it():
    tree = {"train": {"seeds": [0, 1], "augment": {"hflip": 0.5}}, "split": {"seed": 3}}
    flat = flatten(tree)
    assert flat == {"train.seeds": [0, 1], "train.augment.hflip": 0.5, "split.seed": 3}
    blank = {"train": {"seeds": None, "augment": {"hflip": None}}, "split": {"seed": None}}
    assert set_keys(blank, flat) == tree
    assert flatten(7, "a.") == {"a": 7}
