"""`python -m dogbreeds cluster repro` on loopback: a Dask scheduler and 2 `dask worker`
processes (each in its own process group, its clone in its own folder), a folder DVC remote,
and the team's MLflow server on PostgreSQL with logins.

One run of the tiny synthetic study (trimmed like test_chaos: cnn and deformable, one schedule
of 1/1/1 epochs, width 0.25) goes through the cluster while a plain `dvc repro` of the same
commit runs beside it, both with one thread. Half a second after a training's first epoch, the
worker running it is killed with SIGKILL (its whole process group: nanny, worker, dvc and the
training). The study must still complete: the training reruns on the other worker; every
output file and dvc.lock equal the plain run's, bit for bit, except the run facts
(`wall_time_s`, `mlflow_run_id`, which differ between any two runs); each data stage ran once,
no stage twice; each training is in MLflow once FINISHED, the killed attempt's run FAILED; no
password on any command line; and the caller's `dvc status` is clean.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import pytest
import yaml
from conftest import BIN, command_env, make_project, run, set_params
from servers import (
    LOOPBACK,
    add_user,
    free_port,
    has_postgres,
    mlflow_server,
    postgres,
    require,
    signed_in,
)
from test_chaos import lock_without_facts, without_facts

pytestmark = [pytest.mark.slow, pytest.mark.team]

TRIM = {
    "train.archs": ["cnn", "deformable"],
    "train.schedules": {"s20_14_6": {"epochs": [1, 1, 1], "max_lr": [0.01, 0.001, 0.0001]}},
    "model.width_mult": 0.25,
}
TRAININGS = {"cnn-s20_14_6-0", "deformable-s20_14_6-0"}
DATA_STAGES = ("download", "merge", "split", "deform")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # CPU numbers repeat
UP_TO_DATE = "Data and pipelines are up to date."
FIRST_EPOCH = re.compile(r"^\[(w\d)\] train@(\S+) \| .* epoch 1: ")
DB_PASSWORD = f"pw-{secrets.token_hex(8)}"
ADMIN_PASSWORD = f"admin-{secrets.token_hex(8)}"
USER, PASSWORD = "study", f"study-{secrets.token_hex(8)}"


@contextmanager
def process_group(cmd: list[str], log: Path, env: dict, cwd: Path) -> Iterator[subprocess.Popen]:
    """`cmd` in its own process group, SIGKILLed with everything it started at the end."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    try:
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with socket.socket() as sock:
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"port {port} never opened:\n{log.read_text()}")


def outputs(repo: Path) -> dict[str, bytes]:
    """Every file under the outputs dvc.lock lists; a JSON file without its run facts."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    found = {}
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            top = repo / out["path"]
            files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
            for path in files:
                data = path.read_bytes()
                if path.suffix == ".json":
                    data = json.dumps(without_facts(json.loads(data)), sort_keys=True).encode()
                found[str(path.relative_to(repo))] = data
    return found


def fact_files(repo: Path, files: dict[str, bytes]) -> set[str]:
    return {f for f in files if f.endswith(".json") and (repo / f).read_bytes() != files[f]}


def command_lines() -> list[str]:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with suppress(OSError):
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


def test_the_study_on_a_dask_cluster_is_the_plain_study_and_survives_a_killed_worker(tmp_path):
    require("PostgreSQL", has_postgres())
    started = time.monotonic()
    template = make_project(tmp_path / "template")
    set_params(template, **TRIM)
    run(["git", "add", "-A"], template)
    run(["git", "commit", "-qm", "the trimmed tiny study"], template)

    # the caller's workspace: a clone of a bare origin (the workers' Git remote), a DVC remote
    origin = tmp_path / "origin.git"
    run(["git", "clone", "-q", "--bare", str(template), str(origin)], tmp_path)
    study = tmp_path / "study"
    run(["git", "clone", "-q", str(origin), str(study)], tmp_path)
    run(["dvc", "remote", "add", "--default", "storage", str(tmp_path / "dvc-remote")], study)
    run(["git", "commit", "-qam", "DVC remote: a folder"], study)
    run(["git", "push", "-q", "origin", "HEAD"], study)

    # the plain run, beside the cluster's (its own clone, its own store, one thread)
    reference = tmp_path / "reference"
    run(["git", "clone", "-q", str(template), str(reference)], tmp_path)
    plain: dict = {}
    plain_run = threading.Thread(
        target=lambda: plain.update(proc=run(["dvc", "repro"], reference, False, ONE_THREAD))
    )

    with ExitStack() as stack:
        db = stack.enter_context(postgres(tmp_path / "db", DB_PASSWORD))
        server = stack.enter_context(mlflow_server(db, tmp_path, ADMIN_PASSWORD))
        add_user(server, USER, PASSWORD)
        plain_run.start()
        port = free_port()
        address = f"tcp://{LOOPBACK}:{port}"
        env = command_env(ONE_THREAD)  # no MLflow variable: those come from the caller
        scheduler_log = tmp_path / "scheduler.log"
        scheduler = stack.enter_context(process_group(
            [str(BIN / "dask"), "scheduler", "--host", LOOPBACK, "--port", str(port),
             "--no-dashboard"], scheduler_log, env, tmp_path,
        ))  # fmt: skip
        wait_for_port(port, scheduler, scheduler_log)
        workers = {}
        for name in ("w1", "w2"):
            folder = tmp_path / name
            folder.mkdir()
            workers[name] = stack.enter_context(process_group(
                [str(BIN / "dask"), "worker", address, "--name", name, "--nthreads", "1",
                 "--local-directory", str(folder), "--no-dashboard"],
                tmp_path / f"{name}.log", env, tmp_path,
            ))  # fmt: skip

        caller_env = command_env({**ONE_THREAD, "MLFLOW_TRACKING_URI": server.url,
                                  "MLFLOW_TRACKING_USERNAME": USER,
                                  "MLFLOW_TRACKING_PASSWORD": PASSWORD})  # fmt: skip
        caller = subprocess.Popen(
            [str(BIN / "python"), "-m", "dogbreeds", "cluster", "repro", "--address", address],
            cwd=study, env=caller_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        lines, killed, exposed = [], {}, []

        def kill(name: str) -> None:
            exposed.extend(line for line in command_lines() if PASSWORD in line)
            os.killpg(workers[name].pid, signal.SIGKILL)
            killed["at"] = time.monotonic() - started

        timer = None
        for line in caller.stdout:
            lines.append(line)
            hit = FIRST_EPOCH.match(line)
            if hit and timer is None:
                killed.update(worker=hit.group(1), training=hit.group(2))
                timer = threading.Timer(0.5, kill, [hit.group(1)])
                timer.start()
        status = caller.wait()
        output = "".join(lines)
        plain_run.join()
        (tmp_path / "cluster.log").write_text(output)
        assert status == 0, output[-5000:]
        assert "at" in killed, f"no training was killed:\n{output[-3000:]}"

        # each training once in MLflow FINISHED; the killed attempt's run FAILED; none RUNNING
        from mlflow import MlflowClient

        with signed_in(USER, PASSWORD):
            client = MlflowClient(tracking_uri=server.url)
            experiment = client.get_experiment_by_name("dogbreeds").experiment_id
            runs = client.search_runs([experiment], max_results=100)
        runs = [r for r in runs if "dogbreeds.study" not in r.data.tags]  # trainings only
        statuses = {name: sorted(r.info.status for r in runs if r.info.run_name == name)
                    for name in TRAININGS}  # fmt: skip
        assert {r.info.run_name for r in runs} == TRAININGS
        for name, seen in statuses.items():
            want = ["FAILED", "FINISHED"] if name == killed["training"] else ["FINISHED"]
            assert seen == want, (name, seen)

    survivor = ({"w1", "w2"} - {killed["worker"]}).pop()
    stage = f"train@{killed['training']}"
    assert f"[{killed['worker']}] {stage} | started on" in output
    assert f"[{survivor}] {stage} | started on" in output
    assert f"done: {stage} on {survivor}" in output
    for data_stage in DATA_STAGES:  # once on the cluster, never here
        assert output.count(f"| Running stage '{data_stage}'") == 1, data_stage
    done = re.findall(r"^done: (\S+) on (w\d) in [\d.]+ s, ran (.*)$", output, re.M)
    ran = [s for _, _, what in done if what != "nothing" for s in what.split(", ")]
    assert len(ran) == len(set(ran)) == 12, done  # every stage, each in one task
    assert {w for _, w, _ in done} == {"w1", "w2"}  # the work spread before the kill
    assert not exposed, "a password on a command line"
    assert UP_TO_DATE in run(["dvc", "status"], study).stdout

    assert plain["proc"].returncode == 0, plain["proc"].stdout + plain["proc"].stderr
    want = outputs(reference)
    got = outputs(study)
    assert sorted(got) == sorted(want)
    assert [f for f in want if got[f] != want[f]] == []
    facts = fact_files(reference, want)
    assert lock_without_facts(study, facts) == lock_without_facts(reference, facts)
    print(
        f"cluster: {len(done)} stages over 2 workers, {killed['worker']} killed in {stage} "
        f"at {killed['at']:.0f} s, rerun on {survivor}; {len(want)} files identical to the plain "
        f"run; whole test {time.monotonic() - started:.0f} s"
    )
