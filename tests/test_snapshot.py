"""The snapshot command: a finished study's files, small enough for git, with provenance."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess

import pytest
import yaml
from PIL import Image
from test_report import SEEDS, study  # noqa: F401  (the fake finished study)

from dogbreeds.analysis import report
from dogbreeds.commands import snapshot as snap


@pytest.fixture
def finished(study, tmp_path):  # noqa: F811
    """The report's fake study as a git repository whose workspace params differ from HEAD."""
    params, metrics = study
    report.run_report(params, metrics)
    (metrics / "data.json").write_text("{}\n")
    big = Image.effect_noise((1400, 1400), 80).convert("RGB")  # ~5 MB as PNG: must shrink
    big.save(metrics / "deform_preview.png")
    (metrics / "offsets").mkdir(exist_ok=True)
    for seed in SEEDS:
        Image.new("RGB", (50, 50)).save(metrics / "offsets" / f"offsets-deformable-hot-{seed}.png")
    tree = json.loads(json.dumps(params_tree(params)))  # plain dicts and lists
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "params.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "params"], check=True)
    tree["model"]["resolution"] = 64  # what `dvc exp run -S model.resolution=64` does
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    return params, tmp_path


def params_tree(params) -> dict:
    from dataclasses import asdict

    tree = asdict(params)
    tree["train"].pop("seed", None)  # per-run, not a params.yaml key
    tree["train"]["schedules"] = {
        name: {"epochs": s["epochs"], "max_lr": s["max_lr"]}
        for name, s in tree["train"]["schedules"].items()
    }
    return tree


def test_a_snapshot_holds_the_report_runs_small_figures_and_provenance(finished, tmp_path):
    params, repo = finished
    folder = snap.snapshot(repo, "fake", tmp_path / "results", wall_time_s=123.0)

    assert (folder / "report.md").read_text() == (repo / "metrics" / "report.md").read_text()
    headline = json.loads((folder / "headline.json").read_text())
    assert headline == json.loads((repo / "metrics" / "headline.json").read_text())
    with (folder / "runs.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["run"] for r in rows][:3] == ["cnn-s20_14_6-0", "cnn-s20_14_6-1", "cnn-s20_14_6-2"]
    assert len(rows) == 2 * 2 * len(SEEDS)
    assert float(rows[0]["test_acc"]) == pytest.approx(0.3)

    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == [
        "accuracy-cnn-hot-0.png",
        "accuracy-deformable-hot-0.png",
        "accuracy-vs-macs.png",
        "deform_preview.png",
        "offsets-deformable-hot-0.png",
        "robustness.png",
    ]
    assert all(p.stat().st_size <= snap.MAX_PNG_BYTES for p in folder.glob("*.png"))
    assert (repo / "metrics" / "deform_preview.png").stat().st_size > snap.MAX_PNG_BYTES

    provenance = json.loads((folder / "provenance.json").read_text())
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True)
    assert provenance["commit"] == head.stdout.decode().strip()
    assert provenance["params_changed"] == {"model.resolution": {"commit": 16, "study": 64}}
    assert provenance["wall_time_s"] == 123.0
    assert provenance["trainings_wall_time_s"] == 90.0 * len(rows)
    assert provenance["machine"]["cores"] >= 1
    assert provenance["code_changed_since_commit"] == []
    assert provenance["run_commits"] == {r["run"]: None for r in rows}  # no MLflow store here
    assert not (repo / "mlflow.db").exists()

    # every run's per-image predictions, in the evaluate stage's columns, run first
    with gzip.open(folder / "predictions.csv.gz", "rt") as f:
        predictions = list(csv.DictReader(f))
    first = (repo / "metrics" / "eval" / "cnn-s20_14_6-0-predictions.csv").read_text()
    assert len(predictions) == len(rows) * (len(first.splitlines()) - 1)
    assert list(predictions[0]) == ["run", *first.splitlines()[0].split(",")]
    assert {p["run"] for p in predictions} == {r["run"] for r in rows}
    again = snap.snapshot(repo, "again", tmp_path / "results", wall_time_s=123.0)
    assert (again / "predictions.csv.gz").read_bytes() == (
        folder / "predictions.csv.gz"
    ).read_bytes()  # no time in the gzip header: the same study, the same bytes
    assert (folder / "timings.json").read_text() == (repo / "metrics/timings.json").read_text()

    # a README naming every file, and the command that regenerates the folder
    text = (folder / "README.md").read_text()
    for path in folder.iterdir():
        assert f"| `{path.name}` |" in text or path.name == "README.md"
    assert "dvc exp run -S 'model.resolution=64'" in text
    assert "python -m dogbreeds snapshot fake" in text


def test_an_unfinished_study_is_named_and_leaves_nothing(finished, tmp_path):
    _, repo = finished
    (repo / "metrics" / "figures" / "robustness.png").unlink()
    with pytest.raises(snap.SnapshotError, match="robustness.png: not found"):
        snap.snapshot(repo, "fake", tmp_path / "results")
    assert not (tmp_path / "results" / "fake").exists()


def test_the_experiment_is_named_by_its_files_or_by_dvc(tmp_path, monkeypatch):
    """After `dvc exp run` the workspace holds the files of one experiment ref
    (refs/exps/<baseline[:2]>/<baseline[2:]>/<name>): that name goes to the provenance."""
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]

    def out(*args: str) -> str:
        return subprocess.run([*git, *args], check=True, capture_output=True, text=True).stdout

    def experiment(name: str, resolution: int, baseline: str) -> None:
        (tmp_path / "params.yaml").write_text(f"model:\n  resolution: {resolution}\n")
        (tmp_path / "dvc.lock").write_text(f"schema: '2.0'\n# {resolution}\n")
        out("add", "params.yaml", "dvc.lock")
        tree = out("write-tree").strip()
        commit = out("commit-tree", tree, "-p", baseline, "-m", name).strip()
        out("update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}", commit)

    out("init", "-q")
    (tmp_path / "params.yaml").write_text("model:\n  resolution: 224\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    out("add", "params.yaml", "dvc.lock")
    out("commit", "-qm", "baseline")
    assert snap.experiment_name(tmp_path) is None  # a plain dvc repro: no experiment
    head = out("rev-parse", "HEAD").strip()
    experiment("quick-smoke", 32, head)
    experiment("ruled-pods", 64, head)  # the workspace now holds ruled-pods' files
    assert snap.experiment_name(tmp_path) == "ruled-pods"
    experiment("quick-smoke", 32, head)  # like `dvc exp apply quick-smoke`
    assert snap.experiment_name(tmp_path) == "quick-smoke"
    (tmp_path / "params.yaml").write_text("model:\n  resolution: 48\n")  # edited since
    assert snap.experiment_name(tmp_path) is None
    monkeypatch.setenv("DVC_EXP_NAME", "inside-a-run")
    assert snap.experiment_name(tmp_path) == "inside-a-run"
