"""The project's one way to run git and DVC as subprocesses: output captured as text, the
repository named explicitly, DVC from the running interpreter's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def git(repo: Path | None, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """`git -C <repo> <args>` (in the current folder when `repo` is None), output captured as
    text. Without git installed: return code 127 and the reason in stderr, as a shell says."""
    where = ["-C", str(repo)] if repo is not None else []
    try:
        return subprocess.run(
            ["git", *where, *args], input=input, capture_output=True, text=True
        )  # fmt: skip
    except OSError as exc:
        return subprocess.CompletedProcess(["git", *args], 127, "", str(exc))


def git_output(repo: Path | None, *args: str) -> str | None:
    """git's stdout when it succeeds, None when it fails (no repository, no such object, no
    git): for the facts a run records when it can, such as its commit."""
    done = git(repo, *args)
    return done.stdout if done.returncode == 0 else None


def dvc(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m dvc <args>` in `root`, with this interpreter's environment first on PATH (so
    the stage commands DVC starts find the same Python), output captured as text."""
    env = {**(os.environ if env is None else env)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True
    )
