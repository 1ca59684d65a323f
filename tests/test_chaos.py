"""Chaos: `dvc repro` killed with SIGKILL, its whole process group, at seeded moments, and run
again each time, until a last run completes; it must end with the study an uninterrupted run
makes on the same machine.

The study is the tiny one trimmed to the deformable net at one schedule and width 0.25, on a
synthetic source plus a small Stanford-layout tar (so the download stage extracts an archive).
Every stage kind is there: download, merge, split, deform, preview, robustness, train,
evaluate, offsets, report.

One uninterrupted run (the reference) gives each stage's duration. Then, in a fresh copy, the
kill points are taken in pipeline order: one inside every stage (a seeded 2-25% of its
duration after DVC printed `Running stage`), plus three at the moments a training and DVC are
most exposed: the instant the training says it is done (its run FINISHED, its outputs not yet
recorded by DVC), half a second after the attempt after opened its MLflow run (mid-epoch, or
replaying a resumed history), and the instant DVC announces a lock-file update. Each kill
is followed by the study's command again (`python -m dogbreeds repro`, what `make study` runs:
`dvc repro` after repairing a dvc.lock that DVC's in-place rewrite left cut short, which this
test found), which picks up where the last one stopped and is itself killed at the next point;
the last one runs to completion. (A fresh copy per kill, each run to the end,
would cost a whole study per kill point: 12 tiny studies are more than CI's budget.)

After every kill: each stage DVC had recorded before it (`dvc status` clean for it) has
outputs byte-identical to the reference's. At the end: every output and dvc.lock identical to
the reference (but for the run facts below), `dvc status` clean, and MLflow holding exactly one
FINISHED run per training (the one the outputs name), no run RUNNING, and every killed attempt
FAILED. "Identical" has one exception, the run facts: `wall_time_s` and `mlflow_run_id` in the
train and evaluate metrics and the headline differ between any two uninterrupted runs too, so
those JSON files (and the hashes dvc.lock keeps of them) are compared without those keys.

A queue worker killed under `dvc queue start -j 2` is in tests/test_queue.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import command_env, make_project, run, set_params
from datagen import stanford_files, write_tar

from dogbreeds.commands.repro import lock_problem, readable_json

pytestmark = pytest.mark.slow

SEED = 24  # the kill moments
TRAINING = "deformable-s20_14_6-0"
TRIM = {
    "train.archs": ["deformable"],
    "train.schedules": {"s20_14_6": {"epochs": [2, 1, 1], "max_lr": [0.01, 0.001, 0.0001]}},
    "model.width_mult": 0.25,
    "data.sources": ["synthetic", "stanford"],
    "data.stanford.url": "images.tar",
}
KINDS = {"download", "merge", "split", "deform", "preview", "robustness", "train", "evaluate",
         "offsets", "report"}  # fmt: skip
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # one thread: CPU numbers repeat
RUNNING = re.compile(r"Running stage '([^']+)'")
RUN_FACTS = {"wall_time_s", "mlflow_run_id"}
UP_TO_DATE = "Data and pipelines are up to date."


@dataclass
class KillPoint:
    aim: str  # what the kill is aimed at: a stage, or an event in the output
    trigger: str  # the output line (a regex) that starts the clock
    delay: float  # seconds after it
    killed_in: str | None = None  # the stage running when the group was killed
    rerun: str = ""  # what the next `dvc repro` did with it
    notes: list[str] = field(default_factory=list)


def repro(repo: Path, trigger: str = "", delay: float = 0.0) -> tuple[int, str, list]:
    """What `make study` runs (`python -m dogbreeds repro`: dvc repro, after repairing a
    dvc.lock a kill cut short) in its own process group; with `trigger`, SIGKILL to the group
    `delay` seconds after an output line matches it. Returns (exit status, output, [(seconds,
    stage started)])."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dogbreeds", "repro"], cwd=repo,
        env=command_env({**ENV, "PYTHONPATH": "src"}), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    started, lines, timer = [], [], None
    t0 = time.monotonic()

    def kill() -> None:
        started.append((time.monotonic() - t0, "<killed>"))
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    for line in proc.stdout:
        lines.append(line)
        found = RUNNING.search(line)
        if found:
            started.append((time.monotonic() - t0, found.group(1)))
        if trigger and timer is None and re.search(trigger, line):
            timer = threading.Timer(delay, kill)
            timer.start()
    status = proc.wait()
    if timer is not None:
        timer.cancel()
    started.append((time.monotonic() - t0, "<end>"))
    return status, "".join(lines), started


def without_facts(tree):
    if isinstance(tree, dict):
        return {k: without_facts(v) for k, v in tree.items() if k not in RUN_FACTS}
    if isinstance(tree, list):
        return [without_facts(v) for v in tree]
    return tree


def facts_free(path: Path) -> bytes:
    """A file's bytes, or for a JSON file its content without the run facts."""
    data = path.read_bytes()
    if path.suffix != ".json":
        return data
    return json.dumps(without_facts(json.loads(data)), sort_keys=True).encode()


def has_facts(path: Path) -> bool:
    return (
        path.suffix == ".json"
        and facts_free(path) != json.dumps(json.loads(path.read_bytes()), sort_keys=True).encode()
    )


def stage_outputs(repo: Path) -> dict[str, list[str]]:
    """stage -> every file under the outputs dvc.lock lists for it, relative to the repo."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    files = {}
    for stage, entry in lock["stages"].items():
        found = []
        for out in entry.get("outs", []):
            path = repo / out["path"]
            found += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        files[stage] = sorted(p.relative_to(repo).as_posix() for p in found)
    return files


def digests(repo: Path, files: list[str], read=facts_free) -> dict[str, str]:
    return {f: hashlib.sha256(read(repo / f)).hexdigest() for f in files}


def lock_without_facts(repo: Path, varying: set[str]) -> dict:
    """dvc.lock with the hashes of files holding run facts (and of folders holding them) left
    out: everything else, every other hash included, must match."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for entry in stage.get("deps", []) + stage.get("outs", []):
            path = entry["path"].rstrip("/")
            if path in varying or any(v.startswith(path + "/") for v in varying):
                for key in ("md5", "size", "nfiles", "hash"):
                    entry.pop(key, None)
    return lock


def recorded_stages(repo: Path) -> list[str]:
    """The stages dvc.lock holds that `dvc status` finds unchanged."""
    if not (repo / "dvc.lock").exists():
        return []
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout or "{}")
    return [stage for stage in lock["stages"] if stage not in status]


def mlflow_runs(repo: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dogbreeds")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def rerun_summary(output: str) -> str:
    ran = [m.group(1) for m in RUNNING.finditer(output)]
    resumed = re.findall(r"(\S+): resuming after epoch (\d+) of (\d+)", output)
    cached = re.findall(r"Stage '([^']+)' is cached", output)
    parts = ["repaired dvc.lock"] if "cut short by a killed run" in output else []
    parts += [f"ran {', '.join(ran) if ran else 'nothing'}"]
    parts += [f"{name} resumed after epoch {e}/{n}" for name, e, n in resumed]
    if cached:
        parts.append(f"restored from the run cache: {', '.join(cached)}")
    return "; ".join(parts)


def kill_points(durations: dict[str, float], rng: random.Random) -> list[KillPoint]:
    """One kill inside every stage, in pipeline order, and three aimed at exposed moments."""
    points = []
    for stage, seconds in durations.items():
        if stage.startswith("train@"):  # the first attempt ends its run, and is killed then
            points.append(KillPoint("training done, before DVC records its outputs",
                                    rf"{TRAINING}: done in", 0.0))  # fmt: skip
        points.append(KillPoint(stage, f"Running stage '{re.escape(stage)}'",
                                round(rng.uniform(0.02, 0.25) * seconds, 2)))  # fmt: skip
        if stage.startswith("train@"):  # the next one resumes or starts again: hit it with
            # its MLflow run open, whatever the load. (Its "resuming" line comes before the run
            # opens: 0.5 s after it, a busy machine was still opening the run and left none.)
            run_open = rf"MLflow run {TRAINING} \("
            points.append(KillPoint("training, 0.5 s after its MLflow run opened", run_open, 0.5))
        if stage == "deform":
            points.append(KillPoint("DVC writing dvc.lock", "Updating lock file", 0.0))
    return points


def test_dvc_repro_killed_at_any_moment_ends_as_the_uninterrupted_study(tmp_path: Path) -> None:
    template = make_project(tmp_path / "template")
    archive = write_tar(template / "images.tar", stanford_files(), hostile=False)
    TRIM["data.stanford.sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    set_params(template, **TRIM)
    run(["git", "add", "-A"], template)
    run(["git", "commit", "-qm", "the trimmed tiny study"], template)

    reference = tmp_path / "reference"
    shutil.copytree(template, reference, symlinks=True)
    status, output, started = repro(reference)
    assert status == 0, output
    durations = {stage: started[i + 1][0] - t for i, (t, stage) in enumerate(started[:-1])}
    assert {stage.split("@")[0] for stage in durations} == KINDS
    outputs = stage_outputs(reference)
    every_file = sorted(f for files in outputs.values() for f in files)
    want = digests(reference, every_file)
    raw = digests(reference, every_file, Path.read_bytes)
    varying = {f for f in every_file if has_facts(reference / f)}
    lock = lock_without_facts(reference, varying)

    points = kill_points(durations, random.Random(SEED))
    chaos = tmp_path / "chaos"
    shutil.copytree(template, chaos, symlinks=True)
    killed_attempts = 0
    for i, point in enumerate(points):
        status, output, seen = repro(chaos, point.trigger, point.delay)
        if i:
            points[i - 1].rerun = rerun_summary(output)
        assert status == -signal.SIGKILL, (point, output[-3000:])  # every point is reached
        stages = [stage for _, stage in seen if not stage.startswith("<")]
        point.killed_in = stages[-1] if stages else "dvc itself (before any stage)"
        killed_attempts += point.killed_in.startswith("train@")
        problem = lock_problem(chaos / "dvc.lock")
        if problem:  # killed inside DVC's in-place rewrite of dvc.lock: the next run repairs it
            point.notes.append(f"dvc.lock left {problem}")
            continue
        rwlock = chaos / ".dvc" / "tmp" / "rwlock"
        if rwlock.exists() and not readable_json(rwlock):  # killed inside DVC's rewrite of it
            point.notes.append("DVC's rwlock left cut short")  # the next run moves it aside
            continue
        for stage in recorded_stages(chaos):  # what DVC recorded survived the kill intact
            assert digests(chaos, outputs[stage]) == digests(reference, outputs[stage]), stage

    status, output, _ = repro(chaos)
    points[-1].rerun = rerun_summary(output)
    assert status == 0, output
    assert UP_TO_DATE in run(["dvc", "status"], chaos).stdout
    assert digests(chaos, every_file) == want  # the same files, the same bytes ...
    differ = {f for f, h in digests(chaos, every_file, Path.read_bytes).items() if h != raw[f]}
    assert differ <= varying, differ - varying  # ... but for the run facts
    assert lock_without_facts(chaos, varying) == lock

    every_run = mlflow_runs(chaos)
    assert not [r.info.run_name for r in every_run if r.info.status == "RUNNING"]
    runs = [r for r in every_run if r.info.run_name == TRAINING]
    final = json.loads((chaos / "metrics" / "train" / f"{TRAINING}.json").read_text())
    statuses = {r.info.run_id: r.info.status for r in runs}
    assert statuses.pop(final["mlflow_run_id"]) == "FINISHED"
    assert set(statuses.values()) == {"FAILED"}  # every other attempt: killed, and says so
    # a training killed before its run opened (while importing) left none
    assert 2 <= len(statuses) <= killed_attempts, (killed_attempts, statuses)

    print("\n| # | aimed at | after (s) | killed in | left behind | what the next run did |")
    print("|---|---|---|---|---|---|")
    for i, p in enumerate(points, 1):
        left = "; ".join(p.notes) or "-"
        print(f"| {i} | {p.aim} | {p.delay} | {p.killed_in} | {left} | {p.rerun} |")
    print(f"MLflow: 1 FINISHED run of {TRAINING}, {len(statuses)} FAILED (killed attempts)")
    assert len(points) >= 10
    assert {p.killed_in.split("@")[0] for p in points} >= KINDS  # every stage kind
