"""`dvc repro` on a Dask cluster: the caller's side.

1. The workspace must be clean and its commit on the Git remote the workers fetch from, and a
   default DVC remote must be configured in the commit (each worker pushes there, the caller
   pulls from there).
2. `plan.plan` finds the stages `dvc repro` would run; each becomes one Dask task
   (`worker.run_stage`) that depends on the tasks of the stages it reads, so data stages run
   once, first, and trainings and evaluations spread over the workers. Each task's output lines
   stream back as Dask events (`[worker] stage | line`) and its whole log is kept in
   `.dvc/tmp/cluster/<stage>.log`.
3. When every task is done, their dvc.lock entries and `cache: false` outputs are written here
   (`worker.hand_over`), `dvc pull` fetches the cached outputs the workers pushed, nothing runs
   here, and `dvc status` must be clean. Commit dvc.lock and the metrics as after `dvc repro`.

A worker that dies mid-stage: the scheduler reruns its task on another worker (up to its
`distributed.scheduler.allowed-failures`, 3 by default, then the task fails as KilledWorker).
A stage whose command fails is retried `retries` times (default none: the stages are
deterministic, a second attempt fails the same way).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from dogbreeds import DogbreedsError
from dogbreeds.cluster.plan import Step, plan
from dogbreeds.cluster.worker import TOPIC, StageJob, StageResult, hand_over, run_stage
from dogbreeds.common import proc

log = logging.getLogger(__name__)

# Passed to every stage's environment when set here; the password never reaches a command line.
FORWARDED = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
UP_TO_DATE = "Data and pipelines are up to date."
GPU = "GPU"  # the Dask worker resource a GPU stage asks for: `dask worker --resources GPU=1`
LOGS = Path(".dvc") / "tmp" / "cluster"


class ClusterError(DogbreedsError):
    """The workspace cannot go to the cluster, a stage failed there, or the result is not whole."""


@dataclass
class ClusterRun:
    commit: str
    steps: list[Step]
    results: dict[str, StageResult]
    local: str  # what the final `dvc pull` printed


def git(root: Path, *args: str, check: bool = True) -> str:
    done = proc.git(root, *args)
    if check and done.returncode != 0:
        raise ClusterError(f"git {' '.join(args)} failed in {root}: {done.stderr.strip()}")
    return done.stdout.strip()


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = proc.dvc(root, *args)
    if check and done.returncode != 0:
        raise ClusterError(f"dvc {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def check_workspace(root: Path, git_remote: str | None) -> tuple[str, str]:
    """(commit, Git remote): the clean workspace's commit, which the remote must hold."""
    dirty = git(root, "status", "--porcelain")
    if dirty:
        raise ClusterError(
            "the workspace has uncommitted changes (the workers check out a commit): "
            f"commit and push them first:\n{dirty}"
        )
    commit = git(root, "rev-parse", "HEAD")
    if git_remote is None:
        git_remote = git(root, "remote", "get-url", "origin", check=False)
        if not git_remote:
            raise ClusterError(
                "no Git remote 'origin' here: name the workers' one with --git-remote"
            )
    heads = [line.split()[0] for line in git(root, "ls-remote", git_remote).splitlines()]
    on_remote = commit in heads or any(
        proc.git(root, "merge-base", "--is-ancestor", commit, head).returncode == 0
        for head in heads
    )
    if not on_remote:
        raise ClusterError(f"commit {commit[:12]} is not on {git_remote}: git push it first")
    if not dvc(root, "remote", "default", check=False).stdout.strip():
        raise ClusterError(
            "no default DVC remote: the workers share outputs and run cache through it "
            "(dvc remote add --default ..., then commit .dvc/config)"
        )
    return commit, git_remote


def forwarded_env(names: Sequence[str]) -> dict[str, str]:
    """The caller's values of FORWARDED and of `names` (NAME, or NAME=VALUE for a value)."""
    env = {name: os.environ[name] for name in FORWARDED if name in os.environ}
    for item in names:
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def cluster_repro(
    address: str,
    targets: Sequence[str] = (),
    root: Path = Path("."),
    git_remote: str | None = None,
    worker_dir: str | None = None,
    env_names: Sequence[str] = (),
    retries: int = 0,
    say: Callable[[str], None] = print,
    gpu_stages: Sequence[str] = (),
) -> ClusterRun:
    """Run the stages `dvc repro [targets]` would run on the Dask scheduler at `address`, then
    restore them all here from the run cache. Stages matching a `gpu_stages` pattern run only on
    workers that offer the GPU resource (`stage_resources`)."""
    from distributed import Client

    root = Path(git(root, "rev-parse", "--show-toplevel"))
    commit, git_remote = check_workspace(root, git_remote)
    steps = plan(root, targets)
    say(f"{len(steps)} stages to run at {commit[:12]}: {', '.join(s.stage for s in steps)}")
    resources = {s.stage: stage_resources(s.stage, gpu_stages) for s in steps}
    on_gpu = [stage for stage, wants in resources.items() if wants]
    if on_gpu:
        say(f"on workers with {GPU}=1 only: {', '.join(on_gpu)}")
    env = forwarded_env(env_names)
    results: dict[str, StageResult] = {}
    if steps:
        with Client(address, timeout=60) as client:
            client.subscribe_topic(
                TOPIC, lambda event: say("[{who}] {stage} | {line}".format(**event[1]))
            )
            try:
                run_steps(client, steps, git_remote, commit, env, worker_dir, retries, results,
                          lambda result: done(root, result, say), resources)  # fmt: skip
            except Exception as exc:
                raise ClusterError(f"the cluster run stopped: {exc}") from exc
    twice = [stage for stage, n in Counter(s for r in results.values() for s in r.ran).items()
             if n > 1]  # fmt: skip
    if twice:
        raise ClusterError(f"stages ran in more than one task: {', '.join(twice)}")
    say("the results here: dvc.lock entries and uncached outputs, then dvc pull")
    hand_over(root, (results[step.stage] for step in steps))
    pulled = dvc(root, "pull", *targets)
    output = pulled.stdout + pulled.stderr
    status = dvc(root, "status", *targets).stdout
    if UP_TO_DATE not in status:
        raise ClusterError(f"dvc status is not clean after the cluster run:\n{status}")
    say(f"{len(results)} stages ran on the cluster; {UP_TO_DATE}")
    return ClusterRun(commit, steps, results, output)


def stage_resources(stage: str, gpu_stages: Sequence[str]) -> dict[str, float] | None:
    """The Dask resources a stage's task asks for: one GPU when its address matches one of the
    `gpu_stages` patterns (shell style, e.g. `train@*`), else none, so it runs on any worker.

    Dask holds a task that asks for a resource until a worker that offers it is free: a GPU stage
    never lands on a CPU-only worker, and two never share one GPU (`--resources GPU=1`).
    """
    return {GPU: 1} if any(fnmatchcase(stage, pattern) for pattern in gpu_stages) else None


def run_steps(
    client, steps, git_remote, commit, env, worker_dir, retries, results, on_done, resources=None
):
    """Submit each step once the steps it reads are done, with their results as values, asking
    for the Dask resources `resources` names for it (see `stage_resources`).

    Results come back to this process at once and go out again as arguments, never as Dask
    futures that a worker holds: a worker that dies loses only the stage it was running (Dask
    would recompute every lost result a pending task needs, data stages included).
    """
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    pending = list(steps)
    running = as_completed()

    def submit_ready() -> None:
        for step in [s for s in pending if all(up in results for up in s.after)]:
            pending.remove(step)
            job = StageJob(step, git_remote, commit, env, worker_dir)
            running.add(client.submit(
                run_stage, job, *(results[up] for up in step.after),
                key=f"dvc-repro-{step.stage}-{token}", pure=False, retries=retries,
                resources=(resources or {}).get(step.stage),
            ))  # fmt: skip

    submit_ready()
    try:
        for future in running:
            result = future.result()
            results[result.stage] = result
            on_done(result)
            submit_ready()
    except BaseException:
        client.cancel(list(running.futures))
        raise


def done(root: Path, result: StageResult, say: Callable[[str], None]) -> None:
    keep_log(root, result)
    what = f"ran {', '.join(result.ran)}" if result.ran else "ran nothing"
    say(f"done: {result.stage} on {result.worker} in {result.seconds:.1f} s, {what}")


def keep_log(root: Path, result: StageResult) -> Path:
    path = root / LOGS / (re.sub(r"[^A-Za-z0-9_.@-]+", "_", result.stage) + ".log")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.log)
    return path
