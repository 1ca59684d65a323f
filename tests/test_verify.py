"""verify: a committed study rerun from its snapshot, judged run by run.

The judgement is a pure function (`verify.judge`), tested directly; the command is tested on a
snapshot that the project's own snapshot command takes of the report's fake study, with that
study's repository as the reused work folder (so its results are the "rerun"); one slow test
reruns a one-run study of the synthetic source through DVC for real.
"""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
from pathlib import Path

import pytest
from conftest import make_project, run, set_params
from test_report import study  # noqa: F401  (the fake finished study)
from test_snapshot import finished  # noqa: F401

from dogbreeds.__main__ import main as dogbreeds
from dogbreeds.commands import snapshot as snap
from dogbreeds.commands import verify
from dogbreeds.params import load_params, read_yaml

CELL = ("cnn", "hot")  # a cell of the fake study: test accuracy 0.3, 0.32, 0.34 over seeds 0-2


@pytest.fixture
def snapshotted(finished, tmp_path):  # noqa: F811
    """(snapshot folder, the study's repository) for the fake study."""
    _, repo = finished
    return snap.snapshot(repo, "tiny", tmp_path / "results"), repo


def edit_runs(folder: Path, run: str, **values) -> None:
    """Change one run's numbers in a snapshot's runs.tsv (a tampered snapshot)."""
    path = folder / "runs.tsv"
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        if row["run"] == run:
            row.update({k: str(v) for k, v in values.items()})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


def result(seed: int, test_acc: float, clean: float = 0.6, predictions=None):
    metrics = {"train_acc": 0.5, "val_acc": 0.4, "test_acc": test_acc, "clean_test_acc": clean}
    return verify.RunResult(
        f"cnn-hot-{seed}", *CELL, seed, metrics | {"test_loss": 1.2}, predictions
    )


SEEDS = [result(0, 0.30), result(1, 0.32), result(2, 0.34)]  # one-run 95% PI: 0.32 ± 0.099


# ----------------------------------------------------------------------------- the judgement


def test_equal_numbers_and_predictions_are_bit_identical():
    lines = ("id,label,test,clean_test", "a,1,1,1", "b,2,0,2")
    original = result(0, 0.30, predictions=lines)
    verdict = verify.judge(original, result(0, 0.30, predictions=lines), SEEDS)
    assert verdict.kind == verify.IDENTICAL and verdict.passed
    assert verdict.changed_predictions == 0


def test_a_changed_prediction_is_not_identical_but_can_be_inside():
    original = result(0, 0.30, predictions=("id,label,test,clean_test", "a,1,1,1", "b,2,0,2"))
    changed = result(0, 0.30, predictions=("id,label,test,clean_test", "a,1,1,1", "b,2,2,2"))
    verdict = verify.judge(original, changed, SEEDS)
    assert (verdict.kind, verdict.changed_predictions) == (verify.INSIDE, 1)


def test_a_rerun_is_held_against_the_cells_one_run_prediction_interval():
    interval = verify.judge(SEEDS[0], result(0, 0.31), SEEDS).intervals["test_acc"]
    assert (interval.low, interval.high) == pytest.approx((0.2206, 0.4194), abs=1e-4)
    assert verify.judge(SEEDS[0], result(0, 0.40), SEEDS).kind == verify.INSIDE
    outside = verify.judge(SEEDS[0], result(0, 0.45), SEEDS)
    assert outside.kind == verify.OUTSIDE and not outside.passed
    assert "test_acc 0.4500 outside [0.2206, 0.4194]" in outside.why
    # every seed's clean accuracy is 0.6: an interval of zero width still holds 0.6 itself
    assert verify.judge(SEEDS[0], result(0, 0.31, clean=0.6), SEEDS).kind == verify.INSIDE
    assert verify.judge(SEEDS[0], result(0, 0.31, clean=0.62), SEEDS).kind == verify.OUTSIDE


def test_one_seed_gives_no_interval_only_identity_or_a_stated_tolerance():
    one = [SEEDS[0]]
    assert verify.judge(SEEDS[0], result(0, 0.30), one).kind == verify.IDENTICAL
    unjudged = verify.judge(SEEDS[0], result(0, 0.31), one)
    assert unjudged.kind == verify.UNJUDGED and not unjudged.passed
    assert "one seed, no interval" in unjudged.why
    assert verify.judge(SEEDS[0], result(0, 0.31), one, tolerance=0.02).kind == verify.INSIDE
    assert verify.judge(SEEDS[0], result(0, 0.33), one, tolerance=0.02).kind == verify.OUTSIDE


# ----------------------------------------------------------------------------- the command


def test_an_identical_rerun_passes(snapshotted, capsys):
    folder, repo = snapshotted
    status = dogbreeds(["verify", str(folder), "--repo", str(repo), "--workdir", str(repo)])
    out = capsys.readouterr().out
    assert status == 0, out
    line = "verify tiny: 12 runs in 4 cells: 12 bit-identical, 0 inside the one-run prediction "
    assert line + "interval, 0 outside, 0 unjudged: the rerun reproduces the snapshot" in out
    written = (repo / "verify.md").read_text()
    assert "| cnn:hot | 2 | 0.3400 → 0.3400 | [0.2206, 0.4194] |" in written
    assert "data: stanford from http://vision.stanford.edu/" in written  # the study's params
    assert "reused" in written and "0 runs trained and evaluated again" in written


def test_a_tampered_snapshot_fails_and_names_the_runs(snapshotted, capsys):
    """The snapshot claims cnn:hot reached 0.2 more than the study measured (0.30-0.34)."""
    folder, repo = snapshotted
    for seed, measured in enumerate((0.30, 0.32, 0.34)):
        edit_runs(folder, f"cnn-hot-{seed}", test_acc=round(measured + 0.2, 2))
    out = repo / "verdicts.md"
    argv = ["verify", str(folder), "--repo", str(repo), "--workdir", str(repo), "--out", str(out)]
    assert dogbreeds(argv) == 1
    text = capsys.readouterr().out
    assert "9 bit-identical, 0 inside the one-run prediction interval, 3 outside" in text
    assert "NOT reproduced (cnn:hot seed 0, cnn:hot seed 1, cnn:hot seed 2)" in text
    row = "| cnn:hot | 1 | 0.5200 → 0.3200 | [0.4206, 0.6194] |"
    assert row in out.read_text() and "test_acc 0.3200 outside [0.4206, 0.6194]" in text


def test_a_changed_prediction_in_the_snapshot_is_seen(snapshotted, capsys):
    folder, repo = snapshotted
    path = folder / "predictions.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[1] = lines[1][:-1] + ("2" if lines[1][-1] != "2" else "1")  # one clean prediction
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    argv = ["verify", str(folder), "--repo", str(repo), "--workdir", str(repo)]
    argv += ["--cells", "cnn:s20_14_6", "--seeds", "0"]
    assert dogbreeds(argv) == 0  # numbers equal, one image differs: inside, not identical
    text = capsys.readouterr().out
    assert "1 runs in 1 cells: 0 bit-identical, 1 inside" in text
    assert "| cnn:s20_14_6 | 0 |" in text and "| 1 | inside |" in text


def test_cells_and_seeds_choose_runs(snapshotted):
    snapshot = verify.load_snapshot(snapshotted[0])
    assert verify.chosen_runs(snapshot, ["deformable:hot"], [0, 2]) == [
        "deformable-hot-0",
        "deformable-hot-2",
    ]
    assert len(verify.chosen_runs(snapshot, None, [1])) == 4
    assert len(verify.chosen_runs(snapshot, None, None)) == 12


@pytest.mark.parametrize(
    ("tamper", "argv", "message"),
    [
        (None, ["--cells", "cnn:s99"], "cell 'cnn:s99' is not in"),
        (None, ["--seeds", "7"], "seed 7 is not in"),
        ("no-runs", [], "not a study snapshot (no runs.tsv)"),
        ("commit", [], "commit deadbeefdead is not in the repository"),
    ],
)
def test_a_bad_request_is_one_line_and_writes_nothing(snapshotted, capsys, tamper, argv, message):
    folder, repo = snapshotted
    if tamper == "no-runs":
        (folder / "runs.tsv").unlink()
    if tamper == "commit":
        provenance = json.loads((folder / "provenance.json").read_text())
        provenance["commit"] = "deadbeef" * 5
        (folder / "provenance.json").write_text(json.dumps(provenance))
    workdir = repo.parent / "rerun"
    status = dogbreeds(
        ["verify", str(folder), "--repo", str(repo), "--workdir", str(workdir), *argv]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not workdir.exists()


def test_a_missing_snapshot_folder_is_named(tmp_path, capsys):
    assert dogbreeds(["verify", str(tmp_path / "results" / "nope")]) == 1
    assert "nope: not a study snapshot (no provenance.json)" in capsys.readouterr().err


def test_a_reused_folder_must_hold_the_studys_params(snapshotted, capsys):
    folder, repo = snapshotted
    set_params(repo, **{"model.resolution": 32})  # the study ran at 64
    assert dogbreeds(["verify", str(folder), "--repo", str(repo), "--workdir", str(repo)]) == 1
    assert "differs from the study's params at model.resolution" in capsys.readouterr().err


def test_the_checkout_is_the_commit_with_the_studys_params(snapshotted, tmp_path):
    folder, repo = snapshotted
    snapshot = verify.load_snapshot(folder)
    params = verify.study_params(repo, snapshot)
    assert params["model"]["resolution"] == 64  # params_changed applied to the commit's 16
    (repo / "stray.txt").write_text("not committed")
    verify.make_checkout(repo, snapshot.commit, params, tmp_path / "copy")
    assert read_yaml(tmp_path / "copy" / "params.yaml") == params
    assert not (tmp_path / "copy" / "stray.txt").exists()  # the commit, not the worktree
    status = subprocess.run(
        ["git", "-C", str(tmp_path / "copy"), "status", "--porcelain"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert status.split() == ["M", "params.yaml"]  # as `dvc exp run -S` leaves a workspace


# ----------------------------------------------------------------------------- for real


@pytest.mark.slow
def test_a_one_run_study_reruns_bit_identical_through_dvc(tmp_path, capsys):
    """The synthetic study of one net (cnn, one schedule, seed 0) through `dvc repro`, its
    snapshot's files written by the snapshot command's own functions, and verify's rerun in a
    fresh copy at the commit: the same numbers and predictions, bit for bit, on one CPU thread."""
    project = make_project(tmp_path / "repo")
    schedule = {"s20_14_6": {"epochs": [1, 1, 1], "max_lr": [0.01, 0.001, 0.0001]}}
    set_params(project, **{"train.archs": ["cnn"], "train.schedules": schedule})
    run(["git", "commit", "-qam", "one run"], project)
    set_params(project, **{"train.batch_size": 8})  # a param the study changed: -S
    env = {"OMP_NUM_THREADS": "1"}
    run(["dvc", "repro", "evaluate@cnn-s20_14_6-0"], project, env=env)

    folder = tmp_path / "results" / "one-run"
    folder.mkdir(parents=True)
    rows = snap.run_rows(load_params(project / "params.yaml"), project / "metrics")
    snap.write_runs(folder / "runs.tsv", rows)
    snap.write_predictions(folder / "predictions.csv.gz", rows, project / "metrics")
    commit = subprocess.run(["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True)
    provenance = {
        "commit": commit.stdout.decode().strip(),
        "params_changed": snap.params_diff(project),
    }
    (folder / "provenance.json").write_text(json.dumps(provenance))
    assert provenance["params_changed"] == {"train.batch_size": {"commit": 16, "study": 8}}

    workdir = tmp_path / "rerun"
    status = verify.main([str(folder), "--repo", str(project), "--workdir", str(workdir)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "1 runs in 1 cells: 1 bit-identical" in out
    assert (workdir / "metrics" / "eval" / "cnn-s20_14_6-0-predictions.csv").exists()
    assert (workdir / "mlflow.db").exists()  # the rerun's trainings logged there, not elsewhere
