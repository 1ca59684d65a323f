"""`python -m dogbreeds snapshot NAME`: a finished study, committed with its provenance.

The study's outputs live in `metrics/`, which DVC tracks but git readers cannot see without
rerunning it. This command copies what a reader needs into `results/NAME/`, small enough for
git: the report, the headline metrics, one row per run, a few figures as PNG (each under
200 KB: robustness curves, accuracy curves, the deformation preview, one offsets figure,
accuracy against MACs), and `provenance.json` with the params that differ from the commit's
params.yaml, the commit, the machine and the wall time. Run it in the repository (or DVC
experiment workspace) that ran the study, after `dvc repro` / `dvc exp run` finished:

    python -m dogbreeds snapshot cpu-64px-5seeds --wall-time-s 4200

Nothing is recomputed: every number is read from the stages' own files.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import os
import platform
import re
import shutil
from pathlib import Path

from PIL import Image

from dogbreeds import DogbreedsError
from dogbreeds.analysis.plots import plt
from dogbreeds.common import proc
from dogbreeds.common.cli import run_stage
from dogbreeds.common.dotted import flatten
from dogbreeds.common.fs import atomic_path, write_json
from dogbreeds.common.proc import git_output
from dogbreeds.params import Params, load_params, parse_yaml, read_yaml, run_name

MAX_PNG_BYTES = 200_000  # the one kind of image git holds: small figures (developer guide)
RUN_COLUMNS = (
    "run", "arch", "schedule", "seed", "train_acc", "val_acc", "test_acc", "clean_test_acc",
    "test_loss", "epochs", "wall_time_s", "params", "macs", "device", "amp", "threads",
)  # fmt: skip


class SnapshotError(DogbreedsError):
    """The study is unfinished or a file it should have written is missing."""


def need(path: Path) -> Path:
    if not path.exists():
        raise SnapshotError(f"{path}: not found (finish the study first: dvc repro)")
    return path


def params_diff(repo: Path) -> dict[str, dict]:
    """params.yaml of the workspace against the commit's: {key: {"commit": a, "study": b}}.

    `dvc exp run -S key=value` edits the workspace's params.yaml, so this is what the study ran
    with beyond the committed defaults."""
    committed = parse_yaml(git_output(repo, "show", "HEAD:params.yaml") or "{}") or {}
    ran = read_yaml(repo / "params.yaml") or {}
    old, new = flatten(committed), flatten(ran)
    return {
        key: {"commit": old.get(key), "study": new.get(key)}
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    }


def write_predictions(path: Path, rows: list[dict], metrics: Path) -> None:
    """Every run's per-image predictions in one gzip'd CSV (run first, then the evaluate
    stage's columns), so anyone can recompute the report's McNemar tests and bootstrap.
    gzip's header gets no time or name, so the same study gives the same bytes."""
    lines = []
    for i, row in enumerate(rows):
        source = need(metrics / "eval" / f"{row['run']}-predictions.csv").read_text().splitlines()
        if i == 0:
            lines.append(f"run,{source[0]}")
        lines += [f"{row['run']},{line}" for line in source[1:]]
    data = ("\n".join(lines) + "\n").encode()
    with (
        atomic_path(path) as tmp,
        tmp.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out,
    ):
        out.write(data)


def run_commits(rows: list[dict], repo: Path) -> dict[str, str | None]:
    """run -> the commit its training ran at, from its MLflow run's git tag (None where the
    store does not have it: a study tracked on another machine's server, say)."""
    from dogbreeds.tracking.store import sqlite_file, tracking_uri

    uri = tracking_uri(repo.resolve())
    db = sqlite_file(uri)
    if db is not None and not db.exists():  # no store here: opening one would create it
        return {row["run"]: None for row in rows}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    commits: dict[str, str | None] = {}
    for row in rows:
        try:
            run = client.get_run(row["mlflow_run_id"])
            commits[row["run"]] = run.data.tags.get("mlflow.source.git.commit")
        except Exception:  # noqa: BLE001  (a missing store or run: recorded as unknown)
            commits[row["run"]] = None
    return commits


def machine() -> dict[str, str | int]:
    """What the numbers depend on beyond the params: CPU, cores, OS and library versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def run_rows(params: Params, metrics: Path) -> list[dict]:
    """One row per (arch, schedule, seed): the train stage's and evaluation's numbers."""
    rows = []
    for arch in params.train.archs:
        for schedule in params.train.schedules:
            for seed in params.train.seeds:
                name = run_name(arch, schedule, seed)
                train = json.loads(need(metrics / "train" / f"{name}.json").read_text())
                scores = json.loads(need(metrics / "eval" / f"{name}.json").read_text())
                row = {"run": name, "arch": arch, "schedule": schedule, "seed": seed}
                row |= {k: train.get(k, "") for k in RUN_COLUMNS if k in train}
                row["mlflow_run_id"] = train.get("mlflow_run_id")
                row |= {k: scores[k] for k in ("test_acc", "clean_test_acc", "test_loss")}
                rows.append(row)
    return rows


def write_runs(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, RUN_COLUMNS, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def accuracy_against_macs(rows: list[dict], path: Path) -> None:
    """Mean deformed test accuracy over seeds against MACs, one marker per (net, schedule)."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        cells.setdefault((row["arch"], row["schedule"]), []).append(row)
    fig, ax = plt.subplots(figsize=(6, 4))
    for (arch, schedule), seeds in cells.items():
        acc = math.fsum(r["test_acc"] for r in seeds) / len(seeds)
        ax.scatter(seeds[0]["macs"] / 1e6, acc, label=f"{arch} {schedule}")
    ax.set(xlabel="MACs per image (millions)", ylabel="deformed test accuracy (mean over seeds)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def small_png(source: Path, dest: Path) -> None:
    """Copy a PNG, shrinking it (palette colours, then half size) until it is under 200 KB."""
    image = Image.open(source)
    for attempt in range(4):
        buffer = io.BytesIO()
        candidate = image if attempt == 0 else image.convert("RGB").quantize(256)
        if attempt >= 2:
            scale = 0.5 ** (attempt - 1)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            candidate = candidate.resize(size)
        candidate.save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= MAX_PNG_BYTES:
            dest.write_bytes(buffer.getvalue())
            return
    raise SnapshotError(f"{source}: cannot be brought under {MAX_PNG_BYTES:,} bytes")


def figures(params: Params, repo: Path) -> dict[str, Path]:
    """Snapshot name -> source PNG: the robustness curves, the preview, one offsets figure and
    the accuracy curves of each net (last schedule, first seed: the longest training)."""
    metrics = repo / "metrics"
    schedule, seed = list(params.train.schedules)[-1], params.train.seeds[0]
    chosen = {
        "robustness.png": metrics / "figures" / "robustness.png",
        "deform_preview.png": metrics / "deform_preview.png",
    }
    for arch in params.train.archs:
        name = run_name(arch, schedule, seed)
        chosen[f"accuracy-{name}.png"] = metrics / "figures" / f"{name}-accuracy.png"
    if "deformable" in params.train.archs:
        name = run_name("deformable", schedule, seed)
        chosen[f"offsets-{name}.png"] = metrics / "offsets" / f"offsets-{name}.png"
    return {dest: need(source) for dest, source in chosen.items()}


def changed_code(repo: Path) -> list[str]:
    """Code files that differ from the commit (a report rerun with newer code, say)."""
    status = git_output(repo, "status", "--porcelain", "--", "src", "stages", "dvc.yaml") or ""
    return sorted(line[3:] for line in status.splitlines() if line.strip())


# DVC's experiment refs: refs/exps/<baseline sha[:2]>/<baseline sha[2:]>/<name>
EXP_REF = re.compile(r"refs/exps/(?P<base>[0-9a-f]{2}/[0-9a-f]{38})/(?P<name>[^/]+)$")


def experiment_name(repo: Path) -> str | None:
    """The DVC experiment the workspace holds the results of, or None (a plain `dvc repro`).

    Inside a run DVC says so (DVC_EXP_NAME). After `dvc exp run` or `dvc exp apply` the
    workspace holds one experiment's files: the experiment whose commit has the workspace's
    dvc.lock and params.yaml (one of HEAD's if any, else the newest)."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    files = ("dvc.lock", "params.yaml")
    ours = (git_output(repo, "hash-object", "--", *files) or "").split()
    listed = git_output(
        repo, "for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps/"
    )
    refs = [r for r in (listed or "").split() if EXP_REF.match(r)]
    if len(ours) != len(files) or not refs:
        return None
    query = "".join(f"{ref}:{file}\n" for ref in refs for file in files)
    out = proc.git(repo, "cat-file", "--batch-check=%(objectname)", input=query).stdout
    out = out.splitlines()
    found = [ref for i, ref in enumerate(refs) if out[2 * i : 2 * i + 2] == ours]
    head = (git_output(repo, "rev-parse", "HEAD") or "").strip()
    found.sort(key=lambda ref: EXP_REF.match(ref)["base"].replace("/", "") != head)  # HEAD's
    return EXP_REF.match(found[0])["name"] if found else None


# What each file of a snapshot is, for its README (files it may lack are skipped there).
FILES = {
    "report.md": "the study's report (the report stage's metrics/report.md): the paper's tables "
    "beside ours, both questions answered, what the study could detect",
    "headline.json": "mean deformed and clean test accuracy, val accuracy and training wall "
    "time per net and schedule (metrics/headline.json, DVC's metrics file)",
    "runs.tsv": "one row per trained net: accuracies, epochs, size, device, precision, threads",
    "predictions.csv.gz": "every run's per-image predictions on the deformed (`test`) and clean "
    "(`clean_test`) test images, with each image's id and label (the evaluate stage's "
    "metrics/eval/<run>-predictions.csv, a `run` column first): the McNemar tests and the "
    "bootstrap can be recomputed from it",
    "robustness.tsv": "accuracy against deformation strength per kind, net and schedule: mean "
    "and 95% interval over seeds (metrics/robustness.tsv)",
    "timings.json": "training wall time per net and schedule, median and range over seeds: run "
    "facts, which depend on the machine and on what else ran (metrics/timings.json)",
    "data.json": "image counts per split, breed and source, and what merge rejected "
    "(metrics/data.json)",
    "provenance.json": "the params that differ from the commit's params.yaml, the commit the "
    "snapshot was taken at and the one each training ran at (`run_commits`, from MLflow), the "
    "DVC experiment's name, the machine and the wall time",
    "accuracy-vs-macs.png": "mean deformed test accuracy against MACs per net and schedule",
    "robustness.png": "accuracy against deformation strength (the report's figure)",
    "deform_preview.png": "clean and deformed test images side by side",
}


def yaml_value(value) -> str:
    """A params value as `dvc exp run -S key=value` takes it (YAML: true, [0, 1])."""
    return (
        json.dumps(value) if isinstance(value, (bool, list, dict)) or value is None else str(value)
    )


def readme(name: str, folder: Path, provenance: dict) -> str:
    """results/<name>/README.md: what each file is and the command that regenerates it."""
    changed = provenance["params_changed"]
    sets = " ".join(f"-S '{key}={yaml_value(value['study'])}'" for key, value in changed.items())
    lines = [
        f"# {name}",
        "",
        f"Written by `python -m dogbreeds snapshot {name}` from a finished study "
        f"(DVC experiment `{provenance['dvc_exp_name']}`, commit "
        f"`{(provenance['commit'] or 'unknown')[:12]}`, on {provenance['machine']['cpu']} with "
        f"{provenance['machine']['cores']} cores). Nothing in it is recomputed: every number "
        "comes from the stages' own files.",
        "",
        "| file | what it is |",
        "|---|---|",
    ]
    for file in sorted(p.name for p in folder.iterdir()):
        what = FILES.get(file)
        if what is None and file.startswith("accuracy-"):
            what = "training and val accuracy per epoch of one run (the report's figure)"
        if what is None and file.startswith("offsets-"):
            what = "where each DeformConv layer samples for the centre pixel, clean and deformed"
        lines.append(f"| `{file}` | {what or 'written by the snapshot command'} |")
    lines += [
        "",
        "To regenerate it, check out the commit and run the study with the params that differ "
        "from it, then take the snapshot:",
        "",
        "```bash",
        f"git checkout {(provenance['commit'] or 'HEAD')[:12]}",
        f"dvc exp run {sets}".rstrip(),
        f"python -m dogbreeds snapshot {name}",
        "```",
        "",
    ]
    return "\n".join(lines)


def snapshot(
    repo: Path, name: str, results: Path, wall_time_s: float | None = None, note: str = ""
) -> Path:
    """Write results/<name>/ from the finished study in `repo`; returns the folder."""
    params = load_params(repo / "params.yaml")
    metrics = repo / "metrics"
    rows = run_rows(params, metrics)
    with atomic_path(results / name) as folder:
        folder.mkdir(parents=True)
        for file in ("report.md", "headline.json", "robustness.tsv", "data.json"):
            shutil.copyfile(need(metrics / file), folder / file)
        if (metrics / "timings.json").exists():  # wall times, kept out of report.md
            shutil.copyfile(metrics / "timings.json", folder / "timings.json")
        write_runs(folder / "runs.tsv", rows)
        write_predictions(folder / "predictions.csv.gz", rows, metrics)
        for dest, source in figures(params, repo).items():
            small_png(source, folder / dest)
        accuracy_against_macs(rows, folder / "accuracy-vs-macs.png")
        small_png(folder / "accuracy-vs-macs.png", folder / "accuracy-vs-macs.png")
        provenance = {
            "name": name,
            "commit": (git_output(repo, "rev-parse", "HEAD") or "").strip() or None,
            "run_commits": run_commits(rows, repo),
            "code_changed_since_commit": changed_code(repo),
            "note": note,
            "dvc_exp_name": experiment_name(repo),
            "params_changed": params_diff(repo),
            "machine": machine(),
            "wall_time_s": wall_time_s,
            "trainings_wall_time_s": round(math.fsum(r["wall_time_s"] for r in rows), 1),
            "runs": len(rows),
            "command": f"python -m dogbreeds snapshot {name}",
        }
        write_json(folder / "provenance.json", provenance)
        (folder / "README.md").write_text(readme(name, folder, provenance))
    return results / name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds snapshot", description=__doc__.splitlines()[0]
    )
    parser.add_argument("name", help="the folder under results/, e.g. cpu-64px-5seeds")
    parser.add_argument("--repo", type=Path, default=Path("."), help="where the study ran")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--wall-time-s", type=float, help="the study's wall time, as measured")
    parser.add_argument("--note", default="", help="how the study was run, in a sentence")
    args = parser.parse_args(argv)
    run_stage(
        lambda: print(snapshot(args.repo, args.name, args.results, args.wall_time_s, args.note))
    )


if __name__ == "__main__":
    main()
