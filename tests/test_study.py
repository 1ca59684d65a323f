"""End to end: `dvc repro` of the whole study on the synthetic source, then DVC's incremental
reruns and an experiment in a temporary copy, all logging into the repository's mlflow.db.

One test walks through the steps in order, because each builds on the previous state and a
full `dvc repro` is the expensive part (the slowest tests are listed at the end of each run).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import run, set_params
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

ARCHS = ("cnn", "dsc", "deformable")
SCHEDULES = ("s20_14_6", "s50_7_3", "s50_14_6")
DATA_STAGES = {"download", "merge", "split", "deform", "preview", "robustness"}
CELLS = {f"{arch}-{schedule}" for arch in ARCHS for schedule in SCHEDULES}


def runs_of(seed: int, cells=CELLS) -> set[str]:
    """MLflow run names of one seed: cnn-s20_14_6-0, ..."""
    return {f"{c}-{seed}" for c in cells}


def stages_of(seed: int, cells=CELLS, kinds=("train", "evaluate")) -> set[str]:
    """DVC stage names of one seed: the matrix names them train@cnn-s20_14_6-0, ..."""
    return {f"{kind}@{c}-{seed}" for kind in kinds for c in cells}


# 32-pixel nets are too small to gain from intra-op threads, which only contend on 2 cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def ran(proc) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` actually executed."""
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr))


def tracked_runs(repo: Path) -> list:
    """Every training's MLflow run in the repository's own store (not the study runs)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dogbreeds")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if "dogbreeds.study" not in r.data.tags]


def study_runs(repo: Path) -> dict[str, object]:
    """The study runs of the repository's store, by name (tests/test_study_run.py has more)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dogbreeds")
    runs = client.search_runs([experiment.experiment_id], "tags.`dogbreeds.study` LIKE '%'")
    return {r.info.run_name: r for r in runs}


def stale_stages(repo: Path) -> set[str]:
    """The stages `dvc status` reports as changed."""
    return set(json.loads(run(["dvc", "status", "--json"], repo).stdout))


def stale_trainings(repo: Path) -> set[str]:
    """The train stages `dvc status` reports as changed."""
    return {name for name in stale_stages(repo) if name.startswith("train@")}


def append_comment(repo: Path, *files: str) -> None:
    for file in files:
        path = repo / file
        comment = "#" if file.endswith(".py") else "//"
        path.write_text(path.read_text() + f"\n{comment} an edit that changes no number\n")


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def test_study_reruns_only_what_changed_and_tracks_every_run(project: Path):
    # 1. The paper's study, one seed per cell: data stages, 9 trainings, 9 evaluations, report.
    set_params(project, **{"train.seeds": [0]})
    first = run(["dvc", "repro"], project, env=ONE_THREAD)
    assert ran(first) == DATA_STAGES | stages_of(0) | {"offsets", "report"}
    runs = tracked_runs(project)
    assert {r.info.run_name for r in runs} == runs_of(0) and len(runs) == 9
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == [1, 2, 3]  # epochs [1, 1, 1]
        assert {"test_acc", "clean_test_acc", "train_loss"} <= set(r.data.metrics)
        assert r.data.params["model.resolution"] == "32"
        assert r.data.tags["mlflow.source.git.commit"]
        assert r.info.status == "FINISHED"
    # one study run for the repro, the trainings its children, the report's headline in it
    [(name, parent)] = study_runs(project).items()
    assert name.startswith("workspace-")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert "cnn.s20_14_6.test_acc" in parent.data.metrics
    assert "report.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    report = (project / "metrics/report.md").read_text()
    for net in ("CNN", "DSC", "DeformableCNN"):
        assert f"## DogBreedClassification{net}" in report
    assert len(list((project / "metrics/figures").glob("*-accuracy.png"))) == 9
    assert len(list((project / "metrics/figures").glob("*-confusion.png"))) == 9
    assert (project / "metrics/figures/robustness.png").exists()
    offsets = project / "metrics/offsets"
    assert {p.name for p in offsets.glob("*.png")} == {
        f"offsets-deformable-{s}-0.png" for s in SCHEDULES
    }
    assert "## Robustness curves" in report and "## Learned offsets" in report
    assert "with one seed per cell there is no interval" in report
    # DVC's metrics are the small headline file only: mean test accuracies per net and schedule
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    assert list(shown[""]["data"]) == ["metrics/headline.json"]

    # 2. Nothing changed: nothing runs.
    assert ran(run(["dvc", "repro"], project, env=ONE_THREAD)) == set()
    commit(project, "study")

    # 2b. Edits that cannot change a trained net leave every training and evaluation up to
    # date: restyling a figure reruns the figures' stages only.
    pkg = "src/dogbreeds"
    append_comment(project, f"{pkg}/analysis/plots.py", f"{pkg}/tracking/runs.py",
                   f"{pkg}/common/progress.py")  # fmt: skip
    assert stale_stages(project) == {"preview", "offsets", "report"}
    run(["git", "checkout", "--", "."], project)
    # A kernel edit restales what runs the kernel, never the report (it reads recorded sizes).
    append_comment(project, f"{pkg}/ops/csrc/deform_conv_cpu.cpp", f"{pkg}/ops/deform_conv.py")
    stale = stale_stages(project)
    assert "report" not in stale and "train@deformable-s20_14_6-0" in stale
    run(["git", "checkout", "--", "."], project)
    # A deformable-only knob makes only the deformable trainings stale.
    set_params(project, **{"model.deformable.offset_lr_mult": 0.2})
    assert stale_trainings(project) == {f"train@deformable-{s}-0" for s in SCHEDULES}
    run(["git", "checkout", "--", "."], project)

    # 3. One schedule's max_lr: its three trainings, their evaluations and the report.
    set_params(project, **{"train.schedules.s50_7_3.max_lr": [0.02, 0.002, 0.0002]})
    changed = run(["dvc", "repro"], project, env=ONE_THREAD)
    hotter = {f"{arch}-s50_7_3" for arch in ARCHS}
    assert ran(changed) == stages_of(0, hotter) | {"offsets", "report"}
    assert len(tracked_runs(project)) == 12
    commit(project, "hotter s50_7_3")

    # 3b. A second seed trains and evaluates only that seed's nets: 18 finished trainings, one
    # per (net, schedule, seed), and the report gets CIs, McNemar tests and both answers (two
    # seeds are the fewest that give an interval; each seed more is 18 stages more to wait for).
    set_params(project, **{"train.seeds": [0, 1]})
    new_seeds = stages_of(1)
    assert stale_trainings(project) == {s for s in new_seeds if s.startswith("train@")}
    more_seeds = run(["dvc", "repro"], project, env=ONE_THREAD)
    assert ran(more_seeds) == new_seeds | {"offsets", "report"}
    finished = {r.info.run_name for r in tracked_runs(project) if r.info.status == "FINISHED"}
    assert finished == runs_of(0) | runs_of(1)  # 18 names
    report = (project / "metrics/report.md").read_text()
    assert "## Pairs of nets: McNemar's exact test per seed" in report
    assert "**Does the deformable net generalise better?**" in report
    assert "**Does it resist deformation better?**" in report
    assert "one seed per cell" not in report
    commit(project, "two seeds")

    # 4. An experiment in a temporary copy (DVC sets DVC_ROOT) logs into this repo's store.
    experiment = run(
        [
            "dvc",
            "exp",
            "run",
            "--temp",
            "-n",
            "cool-cnn",
            "-S",
            "train.archs=[cnn]",
            "-S",
            "train.seeds=[0]",
            "-S",
            "train.schedules.s20_14_6.max_lr=[0.005,0.0005,0.00005]",
        ],
        project,
        env=ONE_THREAD,
    )
    assert ran(experiment) == stages_of(0, {"cnn-s20_14_6"}) | {"offsets", "report"}
    from_exp = [r for r in tracked_runs(project) if r.data.tags.get("dvc_exp_name") == "cool-cnn"]
    assert [r.info.run_name for r in from_exp] == ["cnn-s20_14_6-0"]
    cool = study_runs(project)["cool-cnn"]  # the experiment's own study run
    assert from_exp[0].data.tags["mlflow.parentRunId"] == cool.info.run_id
    assert "test_acc" in from_exp[0].data.metrics  # the evaluation found the training's run
    artifacts = project / "mlartifacts" / from_exp[0].info.run_id / "artifacts"
    assert (artifacts / "cnn-s20_14_6-0-confusion.json").exists()  # survived the temporary copy
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], project).stdout
    assert "cool-cnn" in shown
