"""Atomic writes (a stage that fails leaves no half-written output behind) and the repo root."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def repo_root(cwd: Path | None = None) -> Path:
    """The main repository, where git-ignored state (downloads, MLflow store, resume states) lives.

    `DVC_ROOT` wins: `dvc exp run --temp` and `dvc queue` run a stage in a copy under
    `.dvc/tmp/exps/` that holds no git-ignored files and is deleted afterwards. Otherwise the
    nearest directory holding `.dvc/`, starting at `cwd`; otherwise `cwd` itself.
    """
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return start


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed onto `target`.

    Works for a file or a directory. On error the temporary is removed and `target`
    is left as it was (DVC removes stale outputs before a stage runs anyway).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path: str | Path, data) -> None:
    """Atomically write `data` as indented JSON (DVC's metrics files)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
