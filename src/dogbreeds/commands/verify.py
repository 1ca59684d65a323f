"""`python -m dogbreeds verify results/<study>`: rerun a committed study and judge the rerun.

A snapshot (`python -m dogbreeds snapshot`) records what a study ran: the commit, the params
that differ from that commit's params.yaml (the data sources with their sha256 pins among
them), one row per trained net in `runs.tsv` and every net's per-image predictions. This
command reruns the study, or the chosen cells and seeds of it, from that record on this
machine, and says per run whether the rerun is

- **bit-identical**: every metric of `runs.tsv` (train, val, deformed and clean test accuracy,
  test loss) and every per-image prediction equal, bit for bit;
- **inside**: not identical, but its deformed and clean test accuracy lie inside the cell's
  95% one-run prediction interval over the snapshot's seeds (mean ± t·s·√(1 + 1/n),
  `analysis.stats.prediction_interval`: where one more run of that cell should fall);
- **outside**: one of them lies outside that interval;
- **unjudged**: not identical, and the cell has one seed, so no interval exists; pass
  `--tolerance 0.02` to accept a rerun within that many accuracy points of the snapshot's.

Any run outside or unjudged makes the exit status 1. The rerun happens in a fresh copy of the
repository at the snapshot's commit (`git archive`, then a git repository of its own, which
DVC needs), with the study's params written into its params.yaml, by `dvc repro --force` of
the chosen runs' evaluate stages (DVC runs what they need upstream: download, merge, split,
deform, robustness, train), with MLflow logging into that copy's own `mlflow.db`. The data are
whatever the study's params name: the synthetic source for a smoke study, the archives at
`data.*.url` for a real one, checked against their `data.*.sha256` pins by the download stage.

`--workdir DIR` puts the copy in DIR and keeps it; a DIR that already holds a params.yaml is
taken as an earlier rerun (or the study's own repository) and reused: its params must be the
study's, and runs whose results it already holds are compared without rerunning them. The
verdicts go to DIR/verify.md (or `--out`) and to the terminal.

The module is longer than most (about 600 lines) because it is one command in four parts read
in order: the snapshot's record, the study's params, the rerun, and the judgement with its
table; split up, none of them would be used alone.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from dogbreeds import DogbreedsError
from dogbreeds.analysis.stats import CONFIDENCE, Interval, prediction_interval
from dogbreeds.common.dotted import flatten
from dogbreeds.common.fs import atomic_path
from dogbreeds.common.proc import git
from dogbreeds.params import parse_yaml, read_yaml

# runs.tsv's metrics of one run: all must be equal for a bit-identical rerun
METRICS = ("train_acc", "val_acc", "test_acc", "clean_test_acc", "test_loss")
# the ones held against the one-run prediction interval: the paper's test and the clean one
JUDGED = ("test_acc", "clean_test_acc")
# accuracies are k / n_images; an interval of zero width (every seed the same) must still hold
# its own value after the float noise of its mean
FLOAT_NOISE = 1e-9

IDENTICAL, INSIDE, OUTSIDE, UNJUDGED = "bit-identical", "inside", "outside", "unjudged"


class VerifyError(DogbreedsError):
    """A snapshot, cell, seed, commit or work folder the rerun cannot start from."""


# ----------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class RunResult:
    """One trained net's numbers, as the snapshot holds them or as the rerun wrote them."""

    run: str
    arch: str
    schedule: str
    seed: int
    metrics: dict[str, float]
    predictions: tuple[str, ...] | None  # the evaluate stage's CSV lines, header first


@dataclass(frozen=True)
class Snapshot:
    """What `results/<study>/` says the study ran and found."""

    folder: Path
    commit: str
    params_changed: dict[str, dict]
    runs: dict[str, RunResult]  # by run name, in runs.tsv's order
    run_commits: dict[str, str | None]
    code_changed: list[str]
    threads: str | None  # the CPU threads every training ran with, when they agree

    @property
    def cells(self) -> list[tuple[str, str]]:
        """(arch, schedule) in runs.tsv's order."""
        return list(dict.fromkeys((r.arch, r.schedule) for r in self.runs.values()))

    def seeds_of(self, arch: str, schedule: str) -> list[RunResult]:
        return [r for r in self.runs.values() if (r.arch, r.schedule) == (arch, schedule)]


def load_snapshot(folder: Path) -> Snapshot:
    """Read provenance.json, runs.tsv and (when there) predictions.csv.gz of a snapshot."""
    for name in ("provenance.json", "runs.tsv"):
        if not (folder / name).is_file():
            raise VerifyError(
                f"{folder}: not a study snapshot (no {name}); give a folder written by "
                "`python -m dogbreeds snapshot`, e.g. results/cpu-64px-5seeds"
            )
    try:
        provenance = json.loads((folder / "provenance.json").read_text())
    except json.JSONDecodeError as exc:
        raise VerifyError(f"{folder / 'provenance.json'}: not JSON ({exc})") from None
    if not provenance.get("commit"):
        raise VerifyError(
            f"{folder / 'provenance.json'}: records no commit, so the study's code is unknown; "
            "pass --commit <sha> to rerun at a commit you choose"
        )
    predictions = read_predictions(folder / "predictions.csv.gz")
    runs, threads = {}, set()
    with (folder / "runs.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            threads.add(row.get("threads") or None)
            metrics = {k: float(row[k]) for k in METRICS if row.get(k) not in (None, "")}
            run = row["run"]
            runs[run] = RunResult(
                run, row["arch"], row["schedule"], int(row["seed"]), metrics,
                predictions.get(run) if predictions is not None else None,
            )  # fmt: skip
    if not runs:
        raise VerifyError(f"{folder / 'runs.tsv'}: no runs; the snapshot is empty")
    return Snapshot(
        folder=folder,
        commit=provenance["commit"],
        params_changed=provenance.get("params_changed") or {},
        runs=runs,
        run_commits=provenance.get("run_commits") or {},
        code_changed=provenance.get("code_changed_since_commit") or [],
        threads=threads.pop() if len(threads) == 1 else None,
    )


def read_predictions(path: Path) -> dict[str, tuple[str, ...]] | None:
    """run -> its lines of the evaluate stage's predictions CSV (header first), from the
    snapshot's one gzip'd file whose first column names the run; None when it has none."""
    if not path.exists():
        return None
    with gzip.open(path, "rt") as f:
        header, *lines = f.read().splitlines()
    own_header = header.split(",", 1)[1]
    by_run: dict[str, list[str]] = {}
    for line in lines:
        run, rest = line.split(",", 1)
        by_run.setdefault(run, [own_header]).append(rest)
    return {run: tuple(rows) for run, rows in by_run.items()}


def chosen_runs(snapshot: Snapshot, cells: list[str] | None, seeds: list[int] | None) -> list[str]:
    """The runs to rerun: every run, or those of the named `arch:schedule` cells and seeds."""
    known = {f"{a}:{s}": (a, s) for a, s in snapshot.cells}
    for cell in cells or []:
        if cell not in known:
            raise VerifyError(
                f"cell {cell!r} is not in {snapshot.folder} (its cells, arch:schedule: "
                f"{', '.join(known)})"
            )
    all_seeds = sorted({r.seed for r in snapshot.runs.values()})
    for seed in seeds or []:
        if seed not in all_seeds:
            raise VerifyError(
                f"seed {seed} is not in {snapshot.folder} (its seeds: "
                f"{', '.join(map(str, all_seeds))})"
            )
    wanted_cells = {known[c] for c in cells} if cells else set(known.values())
    return [
        r.run
        for r in snapshot.runs.values()
        if (r.arch, r.schedule) in wanted_cells and (not seeds or r.seed in seeds)
    ]


# ----------------------------------------------------------------------------- the study's params


def check_commit(repo: Path, commit: str) -> None:
    """The rerun needs the commit's code: say so at once when this repository lacks it."""
    if git(repo, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise VerifyError(
            f"commit {commit[:12]} is not in the repository at {repo.resolve()}; fetch it "
            "(git fetch origin) or pass --repo with a clone that has it"
        )


def study_params(repo: Path, snapshot: Snapshot) -> dict:
    """The params the study ran with: the snapshot commit's params.yaml with the snapshot's
    `params_changed` applied (a key the study lacked is removed)."""
    text = git(repo, "show", f"{snapshot.commit}:params.yaml")
    if text.returncode != 0:
        raise VerifyError(f"commit {snapshot.commit[:12]} has no params.yaml: not this project's")
    tree = parse_yaml(text.stdout) or {}
    for key, change in snapshot.params_changed.items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        if change.get("study") is None:
            node.pop(last, None)
        else:
            node[last] = change["study"]
    return tree


def data_statement(tree: dict) -> str:
    """Where the rerun's images come from, in one line: the study's own sources and pins."""
    data = tree["data"]
    parts = []
    for source in data["sources"]:
        if source == "synthetic":
            s = data["synthetic"]
            parts.append(
                f"synthetic shapes made by the download stage ({s['per_class']} per breed, "
                f"{s['size']} px, seed {s['seed']}), not photos"
            )
        else:
            pin = data[source].get("sha256") or "none: not checked"
            parts.append(f"{source} from {data[source]['url']} (sha256 {pin})")
    model, seeds = tree["model"]["resolution"], tree["train"]["seeds"]
    return f"data: {'; '.join(parts)}; nets at {model} px, seeds {seeds}"


# ----------------------------------------------------------------------------- the rerun


def write_yaml(path: Path, tree: dict) -> None:
    """params.yaml as YAML 1.2 (what DVC and `read_yaml` read)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with path.open("w") as f:
        yaml.dump(tree, f)


def make_checkout(repo: Path, commit: str, params: dict, workdir: Path) -> None:
    """A copy of the repository at `commit` in `workdir`, a git repository of its own (DVC
    needs one), with the study's params in its params.yaml as `dvc exp run -S` leaves them."""
    workdir.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", commit], capture_output=True)
    if archive.returncode != 0:
        raise VerifyError(f"git archive {commit[:12]} failed: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(workdir, filter="data")
    who = ["-c", "user.name=dogbreeds verify", "-c", "user.email=verify@localhost"]
    for args in (["init", "-q"], ["add", "-A"], [*who, "commit", "-qm", f"{commit} (verify)"]):
        done = git(workdir, *args)
        if done.returncode != 0:
            raise VerifyError(f"git {' '.join(args)} in {workdir} failed: {done.stderr.strip()}")
    write_yaml(workdir / "params.yaml", params)


def check_reused_params(workdir: Path, params: dict) -> None:
    """A reused folder must hold the study's params, or its results are another study's."""
    held = flatten(read_yaml(workdir / "params.yaml") or {})
    wanted = flatten(params)
    differ = sorted(k for k in held.keys() | wanted.keys() if held.get(k) != wanted.get(k))
    if differ:
        raise VerifyError(
            f"{workdir / 'params.yaml'} differs from the study's params at {', '.join(differ)}; "
            "give an empty or new --workdir for a fresh rerun"
        )


def prepare_workdir(
    repo: Path, commit: str, params: dict, runs: list[str], workdir: Path | None, name: str
) -> tuple[Path, list[str]]:
    """The folder to rerun in and the runs it must rerun: a new copy at the commit (a fresh
    temporary folder, or the given one when it is empty) reruns them all; a given folder
    holding a params.yaml is reused, rerunning only the runs it holds no results of. A copy
    that could not be made is removed: nothing half-made is left."""
    if workdir is not None and (workdir / "params.yaml").exists():
        check_reused_params(workdir, params)
        return workdir, [r for r in runs if not all(p.exists() for p in result_files(workdir, r))]
    if workdir is not None and workdir.exists() and any(workdir.iterdir()):
        raise VerifyError(f"{workdir}: not empty and holds no params.yaml; give an empty folder")
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"dogbreeds-verify-{name}-"))
    try:
        make_checkout(repo, commit, params, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return workdir, runs


def result_files(workdir: Path, run: str) -> list[Path]:
    """What the train and evaluate stages of one run write that the comparison reads."""
    return [
        workdir / "metrics" / "train" / f"{run}.json",
        workdir / "metrics" / "eval" / f"{run}.json",
        workdir / "metrics" / "eval" / f"{run}-predictions.csv",
    ]


def rerun(workdir: Path, runs: list[str], threads: str | None) -> None:
    """`dvc repro --force` of the runs' evaluate stages (and so of everything upstream, run
    again rather than restored from DVC's run cache), in `workdir`, output to the terminal.

    On a CPU the sums inside a training depend on how many threads split them, so the rerun
    uses the study's thread count (OMP_NUM_THREADS) unless the caller's environment sets one."""
    for run in runs:  # a copy may carry results in git: they must come from this rerun
        for path in result_files(workdir, run):
            path.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir.resolve() / 'mlflow.db'}",  # not yours
    }
    if threads and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = threads
    command = [sys.executable, "-m", "dvc", "repro", "--force", *(f"evaluate@{r}" for r in runs)]
    print(f"rerunning in {workdir}: {' '.join(command[2:])}", flush=True)
    done = subprocess.run(command, cwd=workdir, env=env)
    if done.returncode != 0:
        raise VerifyError(
            f"dvc repro failed in {workdir} (exit {done.returncode}; its output is above); "
            f"fix the cause and rerun with --workdir {workdir} to reuse what finished"
        )


def read_rerun(workdir: Path, original: RunResult) -> RunResult:
    """One run's numbers as the rerun's train and evaluate stages wrote them."""
    train_json, eval_json, predictions = result_files(workdir, original.run)
    for path in (train_json, eval_json):
        if not path.exists():
            raise VerifyError(f"{path}: not written by the rerun; rerun without --workdir")
    train, scores = json.loads(train_json.read_text()), json.loads(eval_json.read_text())
    metrics = {k: float(train[k]) for k in ("train_acc", "val_acc") if k in train}
    metrics |= {k: float(scores[k]) for k in ("test_acc", "clean_test_acc", "test_loss")}
    lines = tuple(predictions.read_text().splitlines()) if predictions.exists() else None
    return RunResult(original.run, original.arch, original.schedule, original.seed, metrics, lines)


# ----------------------------------------------------------------------------- the judgement


@dataclass(frozen=True)
class Verdict:
    """One run's rerun against the snapshot."""

    original: RunResult
    rerun: RunResult
    kind: str  # IDENTICAL, INSIDE, OUTSIDE or UNJUDGED
    intervals: dict[str, Interval]  # JUDGED metric -> the cell's one-run prediction interval
    changed_predictions: int | None  # images predicted differently; None without predictions
    why: str  # the metric that decided, in words

    @property
    def passed(self) -> bool:
        return self.kind in (IDENTICAL, INSIDE)


def changed_predictions(original: RunResult, rerun: RunResult) -> int | None:
    """How many per-image prediction lines differ (a changed header counts them all)."""
    if original.predictions is None or rerun.predictions is None:
        return None
    a, b = original.predictions, rerun.predictions
    if a[0] != b[0] or len(a) != len(b):
        return max(len(a), len(b)) - 1
    return sum(x != y for x, y in zip(a[1:], b[1:], strict=True))


def judge(
    original: RunResult, rerun: RunResult, seeds: list[RunResult], tolerance: float | None = None
) -> Verdict:
    """The verdict on one rerun, from the snapshot's run and all seeds of its cell.

    Identity is judged on every metric both sides have and on the predictions; the interval
    on the deformed and clean test accuracy only (the study's two measures), each against
    the prediction interval of one run over the snapshot's seeds of that cell."""
    changed = changed_predictions(original, rerun)
    shared = [k for k in METRICS if k in original.metrics and k in rerun.metrics]
    intervals = {m: prediction_interval([s.metrics[m] for s in seeds]) for m in JUDGED}
    if all(original.metrics[k] == rerun.metrics[k] for k in shared) and not changed:
        return Verdict(original, rerun, IDENTICAL, intervals, changed, "every metric equal")
    verdict = INSIDE
    reasons = []
    for metric in JUDGED:
        value, interval = rerun.metrics[metric], intervals[metric]
        if interval.n >= 2:
            inside = interval.low - FLOAT_NOISE <= value <= interval.high + FLOAT_NOISE
            where = f"[{interval.low:.4f}, {interval.high:.4f}]"
        elif tolerance is not None:
            inside = abs(value - original.metrics[metric]) <= tolerance + FLOAT_NOISE
            where = f"{original.metrics[metric]:.4f} ± {tolerance:g}"
        else:
            verdict = UNJUDGED if verdict != OUTSIDE else verdict
            reasons.append(f"{metric} {value:.4f}: one seed, no interval")
            continue
        if not inside:
            verdict = OUTSIDE
            reasons.append(f"{metric} {value:.4f} outside {where}")
    why = "; ".join(reasons) or "not identical, both test accuracies inside"
    return Verdict(original, rerun, verdict, intervals, changed, why)


# ----------------------------------------------------------------------------- the verdicts


def table(verdicts: list[Verdict]) -> str:
    """One row per cell and seed: the two judged accuracies, snapshot -> rerun, with the cell's
    one-run interval, the images predicted differently, and the verdict."""
    percent = round(100 * CONFIDENCE)
    lines = [
        f"| cell | seed | test acc: snapshot → rerun | {percent}% PI, one run | clean test acc: "
        f"snapshot → rerun | {percent}% PI, one run | predictions changed | verdict |",
        "|---|---:|---|---|---|---|---:|---|",
    ]

    def span(interval: Interval) -> str:
        return "none (one seed)" if interval.n < 2 else f"[{interval.low:.4f}, {interval.high:.4f}]"

    for v in verdicts:
        a, b = v.original.metrics, v.rerun.metrics
        changed = "n/a" if v.changed_predictions is None else str(v.changed_predictions)
        verdict = v.kind if v.passed else f"{v.kind}: {v.why}"
        lines.append(
            f"| {v.original.arch}:{v.original.schedule} | {v.original.seed} "
            f"| {a['test_acc']:.4f} → {b['test_acc']:.4f} | {span(v.intervals['test_acc'])} "
            f"| {a['clean_test_acc']:.4f} → {b['clean_test_acc']:.4f} "
            f"| {span(v.intervals['clean_test_acc'])} | {changed} | {verdict} |"
        )
    return "\n".join(lines)


def summary(name: str, verdicts: list[Verdict]) -> str:
    """The one line a reader needs: how many runs of how many cells landed where."""
    count = {kind: sum(v.kind == kind for v in verdicts) for kind in (IDENTICAL, INSIDE)}
    failed = [v for v in verdicts if not v.passed]
    cells = len({(v.original.arch, v.original.schedule) for v in verdicts})
    line = (
        f"verify {name}: {len(verdicts)} runs in {cells} cells: {count[IDENTICAL]} bit-identical, "
        f"{count[INSIDE]} inside the one-run prediction interval, "
        f"{sum(v.kind == OUTSIDE for v in verdicts)} outside, "
        f"{sum(v.kind == UNJUDGED for v in verdicts)} unjudged"
    )
    if not failed:
        return line + ": the rerun reproduces the snapshot"
    names = ", ".join(
        f"{v.original.arch}:{v.original.schedule} seed {v.original.seed}" for v in failed
    )
    return line + f": NOT reproduced ({names})"


def threads_statement(snapshot: Snapshot) -> str:
    """The CPU threads of the study's trainings and of the rerun's (`rerun` sets them)."""
    study = snapshot.threads or "not recorded, or not one number"
    ours = os.environ.get("OMP_NUM_THREADS") or snapshot.threads or "torch's default"
    return f"CPU threads per training: {ours} (the study's: {study})"


def provenance_notes(snapshot: Snapshot, commit: str) -> list[str]:
    """What a reader should weigh: trainings run at another commit, or with uncommitted code."""
    notes = []
    others = sorted({c for c in snapshot.run_commits.values() if c and c != commit})
    if others:
        notes.append(
            f"the trainings ran at commit {', '.join(c[:12] for c in others)}, this rerun at "
            f"{commit[:12]}: pass --commit to rerun at theirs"
        )
    if snapshot.code_changed:
        notes.append(
            f"the snapshot records {len(snapshot.code_changed)} code files changed since its "
            "commit: the study's code was not exactly the commit's"
        )
    return notes


def render(name: str, verdicts: list[Verdict], header: list[str]) -> str:
    """verify.md: what was rerun from what, the per-run table and the summary line."""
    return "\n".join(
        [f"# verify {name}", "", *[f"- {line}" for line in header], "", table(verdicts), "",
         summary(name, verdicts), ""]
    )  # fmt: skip


# ----------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class Outcome:
    verdicts: list[Verdict]
    text: str
    out: Path

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)


def verify(
    folder: Path,
    repo: Path = Path("."),
    cells: list[str] | None = None,
    seeds: list[int] | None = None,
    workdir: Path | None = None,
    out: Path | None = None,
    commit: str | None = None,
    tolerance: float | None = None,
) -> Outcome:
    """Rerun the chosen runs of the snapshot in `folder` and judge each; write the verdicts."""
    snapshot = load_snapshot(folder)
    runs = chosen_runs(snapshot, cells, seeds)
    commit = commit or snapshot.commit
    check_commit(repo, snapshot.commit)  # where the study's params.yaml is
    check_commit(repo, commit)
    params = study_params(repo, snapshot)
    header = [
        f"snapshot {folder} (commit {snapshot.commit[:12]}), rerun at commit {commit[:12]}",
        data_statement(params),
        threads_statement(snapshot),
        *provenance_notes(snapshot, commit),
    ]
    for line in header:
        print(line, flush=True)
    workdir, todo = prepare_workdir(repo, commit, params, runs, workdir, folder.name)
    if len(todo) < len(runs):
        header.append(f"reused {workdir}: {len(runs) - len(todo)} runs' results already there")
    if todo:
        rerun(workdir, todo, snapshot.threads)
    header.append(f"rerun in {workdir}: {len(todo)} runs trained and evaluated again")
    verdicts = []
    for run in runs:
        original = snapshot.runs[run]
        seeds_of_cell = snapshot.seeds_of(original.arch, original.schedule)
        verdicts.append(judge(original, read_rerun(workdir, original), seeds_of_cell, tolerance))
    text = render(folder.name, verdicts, header)
    out = out or workdir / "verify.md"
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return Outcome(verdicts, text, out)


def main(argv: list[str] | None = None) -> int:
    """The command; returns the exit status (1: a run outside or unjudged, or an error) rather
    than ending the process as `common.cli.run_stage` does, so tests can call it."""
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds verify", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "snapshot", type=Path, help="a folder under results/, e.g. results/cpu-64px-5seeds"
    )
    parser.add_argument(
        "--cells", nargs="+", metavar="ARCH:SCHEDULE", help="only these cells, e.g. cnn:s20_14_6"
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    parser.add_argument(
        "--repo", type=Path, default=Path("."), help="the git repository with the snapshot's commit"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where to rerun (kept); one with a params.yaml is reused"
    )
    parser.add_argument("--out", type=Path, help="the verdicts' file (default: WORKDIR/verify.md)")
    parser.add_argument(
        "--commit", help="rerun the code of this commit, e.g. the trainings' run_commits"
    )
    parser.add_argument(
        "--tolerance", type=float, help="accuracy points a one-seed cell's rerun may differ by"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        outcome = verify(
            args.snapshot, args.repo, args.cells, args.seeds, args.workdir, args.out,
            args.commit, args.tolerance,
        )  # fmt: skip
    except DogbreedsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(outcome.text)
    print(f"verdicts written to {outcome.out}")
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
