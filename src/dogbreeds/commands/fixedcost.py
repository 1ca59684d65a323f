"""`python -m dogbreeds fixedcost`: what a train or evaluate stage costs besides its work.

Two measurements (docs/performance.md, "A stage's fixed cost"):

- **imports**: `python -c "import torch"` against `python stages/train.py --help` and
  `stages/evaluate.py --help` (the stage modules' imports plus argparse), run alternately
  `--repeats` times; the medians and their ratios.
- **stages**: the train and evaluate stages of the tiny study (presets/tiny.yaml; two nets, one
  schedule), built in a temporary directory from this repository's dvc.yaml, params.yaml,
  stages/ and src/, its data stages run by `dvc repro` (or `--project` to reuse one), each run
  with the timeline on (`dogbreeds.common.timeline`): *before* is from launching the process
  to its first training step (or evaluation batch) done, *after* from its last one to the
  process's end. The MLflow store is created first, and timed on its own: a study pays for
  that once, not per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dogbreeds.commands import preset
from dogbreeds.common.dotted import set_keys
from dogbreeds.common.timeline import ENV
from dogbreeds.params import read_yaml

ROOT = Path(__file__).resolve().parents[3]  # the repository: dvc.yaml, stages/, src/
ARCHS = ("cnn", "deformable")
SCHEDULE = "s20_14_6"
STAGE_ARGS = ["--schedule", SCHEDULE, "--seed", "0"]


def stage_env(timeline: Path | None = None) -> dict[str, str]:
    """The environment DVC gives a stage command (`PYTHONPATH=src`), this venv first on PATH,
    the timeline on (to `timeline`) or off."""
    env = {**os.environ, "PYTHONPATH": "src"}
    env.pop(ENV, None)
    if timeline is not None:
        env[ENV] = str(timeline)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run `cmd`; return its launch and end as Unix times (raises if it fails)."""
    start = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    end = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return start, end


# ----------------------------------------------------------------------------- imports

IMPORT_COMMANDS = {
    "import torch": ["-c", "import torch"],
    "train --help": ["stages/train.py", "--help"],
    "evaluate --help": ["stages/evaluate.py", "--help"],
}


def import_times(repeats: int, cwd: Path = ROOT) -> dict[str, list[float]]:
    """Seconds of each import command, the commands alternating, `repeats` rounds."""
    times: dict[str, list[float]] = {name: [] for name in IMPORT_COMMANDS}
    env = stage_env()
    for _ in range(repeats):
        for name, args in IMPORT_COMMANDS.items():
            start, end = timed([sys.executable, *args], cwd, env)
            times[name].append(end - start)
    return times


def import_report(times: dict[str, list[float]]) -> list[str]:
    torch_s = statistics.median(times["import torch"])
    lines = ["| command | median s | runs | vs import torch |", "|---|---:|---:|---:|"]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.2f} | {len(values)} | {median / torch_s:.2f}x |")
    return lines


# ----------------------------------------------------------------------------- stages


def copy_code(repo: Path) -> None:
    """This repository's pipeline and code into `repo` (replacing what was there)."""
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("stages", "src"):
        shutil.rmtree(repo / name, ignore_errors=True)
        shutil.copytree(ROOT / name, repo / name, ignore=skip)


def tiny_tree() -> dict:
    """params.yaml with the tiny preset, on the two nets and the one schedule measured."""
    tree = preset.apply(read_yaml(ROOT / "params.yaml"), "tiny")
    schedule = tree["train"]["schedules"][SCHEDULE]
    return set_keys(tree, {"train.archs": list(ARCHS), "train.schedules": {SCHEDULE: schedule}})


def make_project(repo: Path) -> Path:
    """A copy of this repository's pipeline at `repo`, tiny params, its data stages run."""
    repo.mkdir(parents=True)
    copy_code(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_tree(), sort_keys=False))
    env = stage_env()
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=fixedcost", "-c", "user.email=fixedcost@localhost",
         "commit", "-qm", "tiny project"],
        ["dvc", "repro", "-q", "deform", "robustness"],
    ):  # fmt: skip
        timed(cmd, repo, env)
    return repo


def fresh_store(repo: Path) -> None:
    """Remove the project's MLflow store and artifacts, and old timelines."""
    for path in [repo / "mlflow.db", repo / "mlflow.db.lock", *repo.glob("timeline-*.jsonl")]:
        path.unlink(missing_ok=True)
    shutil.rmtree(repo / "mlartifacts", ignore_errors=True)


STORE_SCRIPT = "from dogbreeds.tracking.store import open_experiment; open_experiment()"


def read_timeline(path: Path) -> dict[str, float]:
    """{event: t} of one process's timeline (the last of each event)."""
    events: dict[str, float] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        events[record["event"]] = record["t"]
    return events


def stage_times(repo: Path, runs: int) -> list[dict]:
    """Each train and evaluate stage's launch-to-first-step and last-step-to-end, `runs` times."""
    rows = []
    for round_ in range(runs):
        for arch in ARCHS:
            for stage in ("train", "evaluate"):
                path = repo / f"timeline-{stage}-{arch}-{round_}.jsonl"
                env = stage_env(path)
                cmd = [sys.executable, f"stages/{stage}.py", "--arch", arch, *STAGE_ARGS]
                launch, end = timed(cmd, repo, env)
                events = read_timeline(path)
                rows.append(
                    {
                        "stage": stage,
                        "arch": arch,
                        "before_s": events["first_step"] - launch,
                        "work_s": events["last_step"] - events["first_step"],
                        "after_s": end - events["last_step"],
                        "wall_s": end - launch,
                    }
                )
    return rows


def stage_report(rows: list[dict]) -> list[str]:
    lines = [
        "| stage | net | runs | before first step s | after last step s | fixed s | work s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for stage in ("train", "evaluate"):
        for arch in ARCHS:
            mine = [r for r in rows if r["stage"] == stage and r["arch"] == arch]
            before = statistics.median(r["before_s"] for r in mine)
            after = statistics.median(r["after_s"] for r in mine)
            fixed = statistics.median(r["before_s"] + r["after_s"] for r in mine)
            work = statistics.median(r["work_s"] for r in mine)
            lines.append(
                f"| {stage} | {arch} | {len(mine)} | {before:.2f} | {after:.2f} | {fixed:.2f} "
                f"| {work:.2f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds fixedcost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--only", choices=("imports", "stages"), help="one measurement only")
    parser.add_argument("--repeats", type=int, default=7, help="rounds of the import commands")
    parser.add_argument("--runs", type=int, default=1, help="rounds of the stages")
    parser.add_argument(
        "--project",
        type=Path,
        help="build the tiny project here and keep it, or reuse one built before (its code "
        "replaced by this repository's, its store by a new one); default: a temporary one",
    )
    parser.add_argument("--json", type=Path, help="also write the raw times here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.runs < 1:
        parser.error("--repeats and --runs must be >= 1")
    raw: dict = {}
    if args.only != "stages":
        raw["imports"] = import_times(args.repeats)
        print("\n".join(import_report(raw["imports"])), flush=True)
    if args.only != "imports":
        with tempfile.TemporaryDirectory(prefix="fixedcost-") as tmp:
            repo = args.project or Path(tmp) / "repo"
            if (repo / "data" / "robustness").is_dir():
                copy_code(repo)  # reuse its data; the code measured is this repository's
            else:
                make_project(repo)
            fresh_store(repo)
            launch, end = timed([sys.executable, "-c", STORE_SCRIPT], repo, stage_env())
            raw["new_store_s"] = end - launch
            print(f"\nnew MLflow store (a process that only creates it): {end - launch:.2f} s")
            raw["stages"] = stage_times(repo, args.runs)
        print("\n" + "\n".join(stage_report(raw["stages"])))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
