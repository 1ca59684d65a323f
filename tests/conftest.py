"""Shared fixtures: a throw-away copy of the project as its own git + DVC repository."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import yaml
from datagen import set_keys

from dogbreeds.commands import preset
from dogbreeds.params import read_yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin, so `dvc` and `python` are the tested ones


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with an end-to-end test (marked slow or team) first, in file order, the rest after.

    `make test` hands whole modules to its workers in collection order (pytest-xdist's
    `--dist loadfile --no-loadscope-reorder`): the long modules start at once and the short ones
    fill in at the end, instead of one long module running alone last.
    """
    long = {
        item.path
        for item in items
        if any(item.iter_markers("slow")) or any(item.iter_markers("team"))
    }
    items.sort(key=lambda item: item.path not in long)  # stable: file order within each group


def command_env(env: dict | None = None) -> dict:
    """The environment of a test's commands: the venv first on PATH, no telemetry, a git user."""
    full_env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    full_env.pop("MLFLOW_TRACKING_URI", None)  # the caller's own store, never a test's
    full_env.update(env or {})  # ... unless the test names one
    return full_env


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None):
    """Run a command in `cwd` with the venv first on PATH; return the CompletedProcess."""
    proc = subprocess.run(cmd, cwd=cwd, env=command_env(env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        what = " ".join(cmd)
        raise AssertionError(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextmanager
def queue_workers(repo: Path, jobs: int, env: dict | None = None) -> Iterator[None]:
    """`dvc queue start -j jobs` in `repo`; on leaving, any worker still alive is killed.

    The start's output goes to a file, not a pipe: DVC forks a daemon that inherits the
    starter's stdout, and a worker that misses its own shutdown keeps that daemon, and so the
    pipe, open. Seen with dvc 3.67: a worker logged "shutting down due to empty queue" while its
    task still ran, finished the task and then never exited, which hung `subprocess.run`.
    """
    log = repo / ".dvc" / "tmp" / "queue-start.log"
    with log.open("w") as out:
        cmd = ["dvc", "queue", "start", "-j", str(jobs)]
        subprocess.run(cmd, cwd=repo, env=command_env(env), stdout=out, stderr=out, check=True)
    try:
        yield
    finally:
        for pid_file in (repo / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
            with suppress(ValueError, ProcessLookupError, PermissionError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def wait_for_experiments(project: Path, names: set[str], timeout_s: float = 900) -> dict[str, str]:
    """Poll `dvc queue status` until each named experiment ended; return name -> status. (The
    killed one may stay "Running" there: DVC cannot tell a dead worker from a busy one.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = run(["dvc", "queue", "status"], project).stdout.splitlines()
        status = {n: line.split()[-1] for line in lines for n in names if f" {n} " in line}
        if set(status) == names and all(s in ("Success", "Failed") for s in status.values()):
            return status
        assert time.monotonic() < deadline, lines
        time.sleep(3)


def set_params(repo: Path, **updates) -> None:
    """Set dotted keys in repo/params.yaml, e.g. set_params(repo, **{"split.seed": 3})."""
    path = repo / "params.yaml"
    tree = set_keys(read_yaml(path), updates)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project in a fresh git repo, with the tiny study's params (presets/)."""
    return make_project(tmp_path / "repo")


def make_project(repo: Path) -> Path:
    """The `project` fixture's work, for fixtures of a wider scope than one test."""
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src"):
        skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(ROOT / name, repo / name, ignore=skip)
    set_params(repo, **preset.overrides("tiny"))
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "init"], repo)
    return repo


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """tmp_path/data/prepared as the deform stage writes it: 16px uint8 images of 7 classes.

    Each class is a colour plus noise (the same colours in every split), so a net can learn it.
    """
    import torch

    breeds = read_yaml(ROOT / "params.yaml")["data"]["breeds"]
    generator = torch.Generator().manual_seed(0)
    colours = torch.rand(len(breeds), 3, 1, 1, generator=generator) * 255
    folder = tmp_path / "data" / "prepared"
    folder.mkdir(parents=True)
    sizes = {"train": 6, "val": 3, "test": 3, "val_clean": 3, "test_clean": 3}  # per class
    for split, per_class in sizes.items():
        labels = torch.arange(len(breeds)).repeat_interleave(per_class)
        noise = 30 * torch.randn(len(labels), 3, 16, 16, generator=generator)
        images = (colours[labels] + noise).clamp(0, 255).to(torch.uint8)
        ids = [f"{split}-{i}" for i in range(len(labels))]
        blob = {"images": images, "labels": labels, "ids": ids, "breeds": breeds}
        torch.save(blob, folder / f"{split}.pt")
    return folder


BARRIER = """
import sys, time
from pathlib import Path
root, me = Path(sys.argv[1]), sys.argv[2]
(root / f"ready-{me}").touch()
while len(list(root.glob("ready-*"))) < int(sys.argv[3]):  # a barrier: go together
    time.sleep(0.001)
"""


def race(imports: str, body: str, root: Path, n: int = 2, **env: str) -> list[str]:
    """Run `body` in `n` processes that start it at the same instant (after `imports`, the
    slow part), with the study's store under `root`; returns each one's stdout, stripped."""
    script = textwrap.dedent(imports) + BARRIER + textwrap.dedent(body)
    environ = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **env}
    environ.pop("MLFLOW_TRACKING_URI", None)
    racers = [
        subprocess.Popen([sys.executable, "-c", script, str(root), str(i), str(n)], env=environ,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(n)
    ]  # fmt: skip
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert [racer.returncode for racer in racers] == [0] * n, outputs
    return [out.strip() for out, _ in outputs]
