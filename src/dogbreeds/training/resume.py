"""Resumable training: a state file per run, so a killed training loses one epoch at most.

After every epoch the train stage saves the engine's `TrainState` to
`<root>/.resume/<run>-<key>.pt`, where `<root>` is the main repository (`common.fs.repo_root`:
`DVC_ROOT` under `dvc exp run --temp` and `dvc queue`, whose copies are deleted). The folder is
git-ignored and is not a DVC output, so DVC neither removes it before a rerun nor caches it.
The stage deletes its state when it finishes.

`<key>` hashes everything the run's numbers depend on: its params, the code of every dogbreeds
module loaded, the prepared data it reads and the runtime (device, precision, torch, threads).
A rerun with anything changed looks for another file, so a stale state is never resumed.

While a run trains it holds a lock on its state (released by the OS when the process dies,
even by SIGKILL), so two identical experiments running at once never share one state: the
second trains from scratch without saving any.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from dogbreeds import DogbreedsError
from dogbreeds.common.fs import atomic_path, remove_temporaries, repo_root, unreadable
from dogbreeds.training.history import EpochRecord
from dogbreeds.training.state import TrainState

log = logging.getLogger(__name__)

FOLDER = ".resume"
FORMAT = 1  # bump when the file's layout changes: older files are then ignored


class ResumeError(DogbreedsError):
    """A resume state cannot be read; the message names the file."""


def loaded_code() -> list[Path]:
    """The source files of every dogbreeds module this process has imported, plus its script.

    That is the code a training actually runs (a superset of its dvc.yaml code deps), so
    editing any of it invalidates a saved state.
    """
    files = {
        Path(module.__file__)
        for name, module in list(sys.modules.items())
        if (name == "dogbreeds" or name.startswith("dogbreeds."))
        and getattr(module, "__file__", None)
    }
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if script and script.endswith(".py"):
        files.add(Path(script))
    return sorted(f.resolve() for f in files)


def state_key(run_params: dict[str, Any], runtime: dict[str, str], inputs: Iterable[Path]) -> str:
    """A short hash of what a run's numbers depend on: params, runtime, code and input files."""
    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT, run_params, runtime], sort_keys=True, default=str).encode())
    for path in [*loaded_code(), *inputs]:
        digest.update(path.name.encode())
        with open(path, "rb") as src:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def state_path(run_name: str, key: str, folder: Path | None = None) -> Path:
    """Where the state of run `run_name` with key `key` lives."""
    return (folder or repo_root() / FOLDER) / f"{run_name}-{key}.pt"


@contextmanager
def claim(path: Path) -> Iterator[bool]:
    """Lock `path`'s state for this process; yields False when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_suffix(".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("%s is in use by another training of the same run: not resuming it", path)
        yield False
        return
    for stale in remove_temporaries(path):  # a state write that a kill cut short
        log.info("removed %s, a resume state write cut short", stale)
    try:
        yield True
    finally:
        lock.release()
        path.with_suffix(".lock").unlink(missing_ok=True)
        _remove_if_empty(path.parent)


def save_state(path: Path, state: TrainState, meta: dict[str, Any]) -> None:
    """Atomically write `state` (on the CPU) with plain `meta` (MLflow run id, wall time)."""
    blob = {
        "format": FORMAT,
        "meta": meta,
        "history": [asdict(r) for r in state.history],
        "model": {k: v.detach().cpu() for k, v in state.model.items()},
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "scaler": state.scaler,
        "rng": state.rng,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_state(path: Path) -> tuple[TrainState, dict[str, Any]] | None:
    """The state saved at `path` and its meta, or None when there is none to resume."""
    if not path.exists():
        return None
    # A torn or foreign file (our writes are atomic, so a disk fault or a hand): say which in
    # one line and train from scratch; the first finished epoch overwrites it.
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        log.warning(
            "%s: unreadable resume state (%s); training from scratch", path, unreadable(exc)
        )
        return None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        log.warning("%s: resume state of another format; training from scratch", path)
        return None
    try:
        state = TrainState(
            history=[EpochRecord(**r) for r in blob["history"]],
            model=blob["model"],
            optimizer=blob["optimizer"],
            scheduler=blob["scheduler"],
            scaler=blob["scaler"],
            rng=blob["rng"],
        )
        return state, dict(blob["meta"])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning(
            "%s: incomplete resume state (%s); training from scratch", path, unreadable(exc)
        )
        return None


def remove_state(path: Path) -> None:
    """Delete a finished run's state (the folder goes with the last one, see `claim`)."""
    path.unlink(missing_ok=True)


def _remove_if_empty(folder: Path) -> None:
    with suppress(OSError):  # other runs' states (or their locks) are still there
        folder.rmdir()
