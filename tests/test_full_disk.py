"""A full disk while a stage writes its output: one line naming the output, exit status 1, no
half-written file left for DVC to cache, and the same command succeeds once there is space.

The disk is a real one where this process may mount (root): a tmpfs that a filler file fills
to its last 16 KiB just before the write under test, so the kernel's ENOSPC reaches torch's
C++ writer, SQLite and Python as it would on a full laptop. Elsewhere the write is made to fail
the same way by hand: `torch.save` writes half its bytes and raises ENOSPC.

| Write that meets the full disk    | Stage    | The one line (after `error: `)                             |
|-----------------------------------|----------|------------------------------------------------------------|
| prepared tensors `data/prepared/` | deform   | `data/prepared: no space left on device while writing it (nothing was written); free some space and run the stage again` |
| checkpoint `models/<run>.pt`      | train    | `models/cnn-tiny-0.pt: no space left on device ...`         |
| resume state `.resume/<run>-<key>.pt` | train | `<root>/.resume/cnn-tiny-0-<key>.pt: no space left on device ...` |
"""  # noqa: E501

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from datagen import set_keys

from dogbreeds.params import read_yaml

pytestmark = pytest.mark.slow

NO_SPACE = "no space left on device while writing it (nothing was written); free some space and "
NO_SPACE += "run the stage again"
RUN = "cnn-tiny-0"

# Runs one stage; FILL_BEFORE names the write before which the disk fills up.
DRIVER = """
import errno, os, sys
from pathlib import Path
import torch
from dogbreeds.common.cli import run_stage
from dogbreeds.data import deformations
from dogbreeds.params import load_params
from dogbreeds.pipeline import train
from dogbreeds.training import resume

DISK = Path(os.environ["DISK"])

def fill_the_disk():
    if os.environ["DISK_MODE"] == "tmpfs":  # a real full disk: all but 16 KiB taken
        stat = os.statvfs(DISK)
        size = stat.f_bavail * stat.f_frsize - 16 * 1024
        with open(DISK / "filler", "wb") as filler:
            os.posix_fallocate(filler.fileno(), 0, size)
        return
    save = torch.save  # no mount allowed: every torch.save writes half and meets ENOSPC

    def half_and_enospc(obj, path, *args, **kwargs):
        save(obj, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    torch.save = half_and_enospc

def before(module, name):
    write = getattr(module, name)

    def filled_first(*args, **kwargs):
        fill_the_disk()
        return write(*args, **kwargs)

    setattr(module, name, filled_first)

USE_SITES = {"save_split": deformations, "save_checkpoint": train, "save_state": resume}
if os.environ.get("FILL_BEFORE"):
    before(USE_SITES[os.environ["FILL_BEFORE"]], os.environ["FILL_BEFORE"])
if sys.argv[1] == "deform":
    run_stage(lambda: deformations.prepare_data(load_params()))
else:
    run_stage(lambda: train.run_training(load_params(), "cnn", "tiny", 0))
"""


@dataclass
class Disk:
    repo: Path  # a project on the small disk: params, driver, .dvc/, later data and models
    mode: str  # "tmpfs" (a real full disk) or "injected"

    def run(self, what: str, fill_before: str = "", script: str = "driver.py"):
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
        env.update(DISK=str(self.repo), DISK_MODE=self.mode, FILL_BEFORE=fill_before)
        for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_STAGE"):
            env.pop(name, None)
        cmd = [sys.executable, script, *([what] if what else [])]
        return subprocess.run(cmd, cwd=self.repo, env=env, capture_output=True, text=True)

    def make_space(self) -> None:
        (self.repo / "filler").unlink(missing_ok=True)


def mount_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount") or os.environ.get("DOGBREEDS_NO_MOUNT"):
        return False  # DOGBREEDS_NO_MOUNT=1: try the injected ENOSPC where mounting works
    cmd = ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(folder)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = mount_tmpfs(folder)
    try:
        repo = folder
        (repo / ".dvc").mkdir()  # the repository root: MLflow store and resume states are here
        tree = read_yaml(ROOT / "params.yaml")
        set_keys(tree, {
            "data.sources": ["synthetic"], "data.synthetic.per_class": 12,
            "data.synthetic.size": 48, "model.resolution": 16, "model.width_mult": 0.25,
            "train.device": "cpu", "train.batch_size": 8, "train.amp": "off",
            "train.archs": ["cnn"],
            "train.schedules": {"tiny": {"epochs": [1, 1, 1], "max_lr": [0.01, 0.001, 0.0001]}},
        })  # fmt: skip
        (repo / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
        (repo / "driver.py").write_text(DRIVER)
        yield Disk(repo, "tmpfs" if mounted else "injected")
    finally:
        if mounted:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)


def the_one_line(proc: subprocess.CompletedProcess) -> str:
    """The stage's one `error: ...` line; no traceback; exit status 1. (A training's progress
    bar may still print its last state after it, as the process exits.)"""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    return line.removeprefix("error: ")


def leftovers(folder: Path) -> list[str]:
    """Anything under `folder` an atomic write leaves when it fails: its `.<name>.*` temporary."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def data_stages(disk: Disk) -> None:
    """download, merge and split of the synthetic source: the deform stage's inputs."""
    for name in ("download", "merge", "split"):
        proc = disk.run("", script=str(ROOT / "stages" / f"{name}.py"))
        assert proc.returncode == 0, proc.stderr


def prepared_for_training(disk: Disk) -> None:
    data_stages(disk)
    proc = disk.run("deform")
    assert proc.returncode == 0, proc.stderr


def test_a_full_disk_while_writing_the_prepared_tensors(disk: Disk) -> None:
    data_stages(disk)

    line = the_one_line(disk.run("deform", fill_before="save_split"))

    assert line == f"data/prepared: {NO_SPACE}"
    assert not (disk.repo / "data" / "prepared").exists()
    assert not (disk.repo / "metrics" / "data.json").exists()
    assert leftovers(disk.repo / "data") == [] and leftovers(disk.repo / "metrics") == []

    disk.make_space()
    again = disk.run("deform")
    assert again.returncode == 0, again.stderr
    assert {p.name for p in (disk.repo / "data" / "prepared").iterdir()} >= {"train.pt", "val.pt"}
    print(f"{disk.mode}: data/prepared -> {line}")


def test_a_full_disk_while_writing_a_checkpoint(disk: Disk) -> None:
    prepared_for_training(disk)

    line = the_one_line(disk.run("train", fill_before="save_checkpoint"))

    assert line == f"models/{RUN}.pt: {NO_SPACE}"
    assert not (disk.repo / "models" / f"{RUN}.pt").exists()
    assert leftovers(disk.repo / "models") == []
    assert not (disk.repo / "metrics" / "train").exists()  # written after the checkpoint

    disk.make_space()
    again = disk.run("train")
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch 3 of 3" in again.stderr  # the state of the last epoch was kept
    assert (disk.repo / "models" / f"{RUN}.pt").is_file()
    assert run_statuses(disk.repo) == ["FAILED", "FINISHED"]
    print(f"{disk.mode}: checkpoint -> {line}")


def test_a_full_disk_while_writing_the_resume_state(disk: Disk) -> None:
    prepared_for_training(disk)

    line = the_one_line(disk.run("train", fill_before="save_state"))

    state = re.escape(str(disk.repo.resolve() / ".resume" / RUN))
    assert re.fullmatch(rf"{state}-[0-9a-f]{{16}}\.pt: {re.escape(NO_SPACE)}", line), line
    resume_folder = disk.repo / ".resume"  # no state, no temporary, no lock left behind
    assert not resume_folder.exists() or not list(resume_folder.iterdir())
    assert not (disk.repo / "models").exists()

    disk.make_space()
    again = disk.run("train")
    assert again.returncode == 0, again.stderr
    assert "resuming" not in again.stderr  # nothing was saved to resume from
    assert (disk.repo / "models" / f"{RUN}.pt").is_file() and not (disk.repo / ".resume").exists()
    assert run_statuses(disk.repo) == ["FAILED", "FINISHED"]
    print(f"{disk.mode}: resume state -> {line}")


def run_statuses(repo: Path) -> list[str]:
    """The statuses of the MLflow runs of RUN: none may be left RUNNING."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dogbreeds")
    runs = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{RUN}'")
    return sorted(r.info.status for r in runs)


# ----------------------------------------------------------------------------- atomic_path itself


def test_enospc_in_a_nested_atomic_write_names_the_output_being_written(tmp_path: Path) -> None:
    import errno

    from dogbreeds.common.fs import DiskFullError, atomic_path

    with (
        pytest.raises(DiskFullError) as error,
        atomic_path(tmp_path / "prepared") as folder,
        atomic_path(tmp_path / "data.json"),
    ):
        folder.mkdir()
        (folder / "train.pt").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(error.value) == f"{tmp_path / 'prepared'}: {NO_SPACE}"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written is left


def test_other_write_errors_are_not_called_a_full_disk(tmp_path: Path) -> None:
    from dogbreeds.common.fs import atomic_path

    with pytest.raises(PermissionError), atomic_path(tmp_path / "out.pt") as tmp:
        tmp.write_bytes(b"x")
        raise PermissionError("denied")
    assert list(tmp_path.iterdir()) == []
