"""Atomic writes (a stage that fails leaves no half-written output behind) and the repo root.

A write that fails because the disk is full becomes a `DiskFullError` naming the output: one
line from the stage shell instead of torch's `[enforce fail at inline_container.cc:...]`.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dogbreeds import DogbreedsError

# A write that failed while its filesystem had less than this free failed for want of space.
# torch.save to a path writes from C++ and reports ENOSPC without an errno ("unexpected pos
# 576 vs 534"); the partly written temporary still fills the disk when the error is seen.
NEARLY_FULL_BYTES = 1 << 20


class DiskFullError(DogbreedsError):
    """An output could not be written: no space left on its device (nothing was written)."""


def disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether `exc` (or an exception it came from) is ENOSPC/EDQUOT, or `folder`'s
    filesystem is (nearly) full now that the write failed."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        cause = cause.__cause__ or cause.__context__
    if not isinstance(exc, (OSError, RuntimeError)):  # a bug is not a full disk
        return False
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    free = stat.f_bfree if os.geteuid() == 0 else stat.f_bavail  # root may use reserved blocks
    return free * stat.f_frsize < NEARLY_FULL_BYTES


def unreadable(exc: BaseException) -> str:
    """A short, one-line reason for a file that failed to load (torch's run to a paragraph)."""
    text = " ".join(str(exc).split()).split(". ")[0].rstrip(".")[:160]
    if isinstance(exc, RuntimeError) and text:  # torch's own words say what broke
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


_open_targets: list[Path] = []  # the atomic writes under way in this process, outermost first


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed onto `target`.

    Works for a file or a directory. On error the temporary is removed and `target`
    is left as it was (DVC removes stale outputs before a stage runs anyway). A full disk
    raises `DiskFullError` naming the output being written: the innermost atomic write whose
    temporary exists (`with atomic_path(a) as x, atomic_path(b) as y:` fails writing x's
    files before y exists), else the outermost.
    """
    target = Path(target)
    tmp = target
    _open_targets.append(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(tmp, target)
    except Exception as exc:
        outermost = _open_targets[0] is target
        if isinstance(exc, DogbreedsError) or not (tmp.exists() or outermost):
            raise
        if not disk_full(exc, target.parent):
            raise
        raise DiskFullError(
            f"{target}: no space left on device while writing it (nothing was written); "
            "free some space and run the stage again"
        ) from exc
    finally:
        _open_targets.pop()
        if tmp is not target:
            shutil.rmtree(tmp.parent, ignore_errors=True)


def remove_temporaries(target: str | Path) -> list[Path]:
    """Delete what `atomic_path(target)` writes killed mid-write left beside `target`; return it.

    A SIGKILL skips `atomic_path`'s cleanup, so its temporary folder `.<name>.<random>/` stays.
    Call this only while no other process can be writing `target` (under its lock).
    """
    target = Path(target)
    stale = sorted(target.parent.glob(f".{glob.escape(target.name)}.*"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def write_json(path: str | Path, data) -> None:
    """Atomically write `data` as indented JSON (DVC's metrics files)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def file_md5(path: str | Path) -> str:
    """The md5 of a file's bytes: the hash DVC 3 records for it in dvc.lock (`hash: md5`)."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()
