"""`python -m dogbreeds repro [dvc repro options]`: `dvc repro`, after repairing a dvc.lock that a
killed run cut short (what `make study` runs).

DVC 3.67 rewrites dvc.lock in place (`open(path, "w+")`, then the YAML) after every stage. A
process killed inside that write, a window of milliseconds per stage, leaves the file empty or
cut mid-entry, and every later DVC command stops at "'./dvc.lock' validation failed" (found by
tests/test_chaos.py). The lock only records what DVC also keeps in its run cache, so the repair
is to move the broken file aside (`dvc.lock.broken`) and let `dvc repro` rebuild it: each stage
that finished is restored from the run cache, with the same outputs, without running again;
the one that was interrupted runs.

DVC's read/write lock of the outputs, `.dvc/tmp/rwlock`, is rewritten in place the same way
(`json.dump` into the open file) when a stage starts and ends, so a kill there leaves it empty
or cut and DVC stops at "Unable to read RWLock-file" (also found by tests/test_chaos.py). It
holds only the locks of DVC processes running now: under DVC's own guard for it
(`rwlock.lock`, a zc.lockfile), a file that is still not JSON is moved aside
(`rwlock.broken`) and DVC starts a fresh one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

LOCK = Path("dvc.lock")
RWLOCK = Path(".dvc") / "tmp" / "rwlock"


def lock_problem(lock: Path = LOCK) -> str | None:
    """Why DVC would refuse `lock` ("empty", a YAML or schema error), or None if it is fine."""
    if not lock.exists():
        return None
    text = lock.read_text(errors="replace")
    if not text.strip():
        return "empty"
    import yaml

    from dogbreeds.compat import lockfile_schema

    try:
        lockfile_schema()(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        return f"not YAML ({str(exc).splitlines()[0]})"
    except Exception as exc:  # voluptuous.Invalid: a stage entry cut short
        return f"not a lock file ({exc})"
    return None


def repair_lock(lock: Path = LOCK) -> str | None:
    """Move a broken lock aside; return the one line saying so (None when it was fine)."""
    problem = lock_problem(lock)
    if problem is None:
        return None
    broken = lock.with_name(lock.name + ".broken")
    os.replace(lock, broken)
    return (
        f"{lock}: {problem}, cut short by a killed run; moved to {broken}. DVC rebuilds it: "
        "finished stages come back from its run cache, the interrupted one runs again"
    )


def repair_rwlock(rwlock: Path = RWLOCK) -> str | None:
    """Move a corrupted DVC rwlock aside, holding DVC's guard for it so no DVC process is
    writing it meanwhile; return the one line saying so (None when it was fine or absent)."""
    if not rwlock.exists() or readable_json(rwlock):
        return None
    import zc.lockfile  # DVC's own file lock (a DVC dependency)

    try:
        guard = zc.lockfile.LockFile(str(rwlock.with_name(rwlock.name + ".lock")))
    except zc.lockfile.LockError:
        return None  # a DVC process holds it: the file is being written, not broken
    try:
        if readable_json(rwlock):
            return None
        broken = rwlock.with_name(rwlock.name + ".broken")
        os.replace(rwlock, broken)
    finally:
        guard.close()
    return (
        f"{rwlock}: not JSON, cut short by a killed run; moved to {broken}. It holds only the "
        "locks of running DVC processes: DVC starts a fresh one"
    )


def readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    for message in (repair_lock(), repair_rwlock()):
        if message:
            print(f"warning: {message}", file=sys.stderr)
    dvc = shutil.which("dvc") or "dvc"
    sys.stdout.flush()
    os.execv(dvc, [dvc, "repro", *argv])  # DVC's own exit status and signals from here on


if __name__ == "__main__":
    sys.exit(main())
