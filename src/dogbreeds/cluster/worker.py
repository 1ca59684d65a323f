"""One stage on a Dask worker: its own clone at the caller's commit, the outputs it reads,
`dvc repro --single-item <stage>`, then `dvc push --run-cache <stage>`.

The clone lives in the worker's folder (its Dask local directory, or `<worker_dir>/<name>`) and
is reused by the worker's later stages, with its DVC cache. The stages this one reads hand over
their results as Dask task results: their dvc.lock entries and their `cache: false` outputs
(metrics, plots, small JSON and CSV files), which DVC neither pushes nor keeps in its run cache
(DVC 3 run-caches no stage with a `cache: false` output that is not a metric or a plot, which
here is every stage from deform on). With those entries in the clone's dvc.lock, `dvc pull` of
the stages it reads fetches their cached outputs (data, models) from the DVC remote; then only
the stage itself runs, and `dvc push --run-cache` sends its cached outputs (and any run-cache
entries) to the remote, where the next stage's worker and the caller find them.

A worker that dies mid-stage leaves no result, so Dask's rerun on another worker starts the
stage over; the training's resume state is in the dead worker's clone, so the rerun trains from
scratch, to the same weights (the stages are deterministic), and its MLflow run marks the killed
attempt's run FAILED (same resume key).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dogbreeds import DogbreedsError
from dogbreeds.cluster.plan import Step
from dogbreeds.compat import lockfile_edited

TOPIC = "dogbreeds-cluster"  # the Dask event topic each stage's output lines go to
CLONE = "dogbreeds-clone"
RUNNING = re.compile(r"Running stage '([^']+)'")
CACHED = re.compile(r"Stage '([^']+)' is cached")


class StageFailed(DogbreedsError):
    """A stage's command (git or dvc) failed on a worker."""


@dataclass(frozen=True)
class StageJob:
    step: Step
    git_remote: str  # a URL or path every worker can fetch the commit from
    commit: str
    # Forwarded from the caller; out of the repr, which Dask's worker logs when a task fails
    # ("Compute Failed ... Task: ..."): it may hold MLFLOW_TRACKING_PASSWORD.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    worker_dir: str | None = None  # else the worker's Dask local directory


@dataclass
class StageResult:
    stage: str
    worker: str
    seconds: float
    ran: list[str]  # stages DVC ran in this task ("Running stage ...")
    restored: list[str]  # stages it restored from the run cache
    log: str
    lockfile: str  # dvc.lock, relative to the repository root
    name: str  # the stage's key in it
    lock: dict  # the stage's entry in it
    files: dict[str, bytes]  # its `cache: false` outputs: path relative to the root -> bytes
    uncached: tuple[str, ...]  # those outputs as dvc.yaml names them (files or folders)


def hand_over(root: Path, results: Iterable[StageResult]) -> None:
    """Write `results`' lock entries and uncached outputs into the repository at `root`."""
    for result in results:
        with lockfile_edited(root / result.lockfile) as data:
            data.setdefault("schema", "2.0")
            data.setdefault("stages", {})[result.name] = result.lock
        for out in result.uncached:
            target = root / out
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        for path, data in result.files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)


def collect_result(clone: Path, step: Step, worker: str, seconds: float, log: str):
    """The stage's result, read from the clone after its run."""
    lock = yaml.safe_load((clone / step.lockfile).read_text())["stages"][step.name]
    files = {}
    for out in step.uncached:
        top = clone / out
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        files |= {str(p.relative_to(clone)): p.read_bytes() for p in paths}
    return StageResult(
        step.stage, worker, seconds, RUNNING.findall(log), CACHED.findall(log), log,
        step.lockfile, step.name, lock, files, step.uncached,
    )  # fmt: skip


def worker_name(worker) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(worker.name)).strip("_") or "worker"


def clone_folder(job: StageJob, worker) -> Path:
    if job.worker_dir:
        return Path(job.worker_dir) / worker_name(worker) / CLONE
    return Path(worker.local_directory) / CLONE


def stage_env(forwarded: Mapping[str, str]) -> dict[str, str]:
    """The worker's environment, the caller's forwarded variables, this interpreter's bin first
    on PATH (the stage commands run `python`), and unbuffered output so lines stream."""
    env = {**os.environ, **forwarded}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(PYTHONUNBUFFERED="1", DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("DVC_ROOT", None)
    return env


def stream(cmd: list[str], cwd: Path, env: dict, say: Callable[[str], None]) -> int:
    """Run `cmd`, passing each line of its output (stdout and stderr) to `say`; its exit status."""
    say("$ " + " ".join(cmd[2:] if cmd[1:2] == ["-m"] else cmd))
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace",
    ) as proc:  # fmt: skip
        for line in proc.stdout:
            say(line.rstrip("\n").split("\r")[-1])
    return proc.returncode


def checkout(clone: Path, job: StageJob, env: dict, say: Callable[[str], None]) -> None:
    """`clone` at `job.commit`: cloned on first use, fetched and checked out after that. Ignored
    files (DVC's cache, outputs) stay; DVC checks every output against the stage's deps."""

    def git(*args: str) -> None:
        if stream(["git", *args], clone if clone.is_dir() else clone.parent, env, say) != 0:
            raise StageFailed(f"{job.step.stage}: git {' '.join(args)} failed in {clone}")

    if not (clone / ".git").is_dir():
        shutil.rmtree(clone, ignore_errors=True)
        clone.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "--quiet", "--no-checkout", job.git_remote, str(clone))
    else:
        git("remote", "set-url", "origin", job.git_remote)
        git("fetch", "--quiet", "origin")
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{job.commit}^{{commit}}"], cwd=clone, capture_output=True
    )
    if known.returncode != 0:
        git("fetch", "--quiet", "origin", job.commit)
    git("checkout", "--quiet", "--force", "--detach", job.commit)


def run_stage(job: StageJob, *upstream: StageResult) -> StageResult:
    """The Dask task of one stage; `upstream`: the results of the planned stages it reads."""
    from distributed import get_worker
    from filelock import FileLock

    worker = get_worker()
    name = worker_name(worker)
    step = job.step
    clone = clone_folder(job, worker)
    clone.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        worker.log_event(TOPIC, {"who": name, "stage": step.stage, "line": line})

    started = time.monotonic()
    env = stage_env(job.env)
    dvc = [sys.executable, "-m", "dvc"]
    with FileLock(str(clone.parent / f"{CLONE}.lock")):  # one stage at a time in a clone
        say(f"started on {name} ({worker.address}) in {clone}")
        checkout(clone, job, env, say)
        hand_over(clone, upstream)
        commands = [["repro", "--single-item", step.stage], ["push", "--run-cache", step.stage]]
        if step.reads:
            commands.insert(0, ["pull", *step.reads])
        for args in commands:
            status = stream([*dvc, *args], clone, env, say)
            if status != 0:
                tail = "\n".join(lines[-15:])
                raise StageFailed(f"{step.stage}: dvc {args[0]} exited {status} on {name}:\n{tail}")
        seconds = round(time.monotonic() - started, 2)
        return collect_result(clone, step, name, seconds, "\n".join(lines) + "\n")
