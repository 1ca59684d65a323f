"""`python -m dogbreeds answers results/<study>`: the paper's two questions, answered again
from a snapshot's `runs.tsv` and framed by what they can detect.

A snapshot keeps one row per trained net. The report's paired t tests over seeds need only
those rows, so a study snapshotted before the report said what its verdicts could detect
(results/cpu-64px-5seeds, say) gets the same answers with that framing, without rerunning
anything: the verdict, the smallest difference each comparison could detect, the range the
intervals rule out, and the seeds needed for a stated difference (`report.min_difference`).
It writes `answers.md` beside `runs.tsv`. The bootstrap and the robustness-curve measure need
per-image predictions and per-run curves, which such snapshots lack: they are not here.
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

from dogbreeds import DogbreedsError
from dogbreeds.analysis.comparisons import Comparison
from dogbreeds.analysis.decisions import QUESTIONS, answer, family_note, seeds_needed_table
from dogbreeds.analysis.stats import paired_test
from dogbreeds.common.cli import run_stage
from dogbreeds.common.fs import atomic_path
from dogbreeds.params import load_params

MEASURES = {
    "clean test acc": lambda row: row["clean_test_acc"],
    "deformed − clean": lambda row: row["test_acc"] - row["clean_test_acc"],
}


class AnswersError(DogbreedsError):
    """A snapshot without the rows the answers need; the message names the file."""


def read_runs(path: Path) -> list[dict]:
    """runs.tsv's rows with the accuracies as numbers."""
    if not path.exists():
        raise AnswersError(f"{path}: not found (a snapshot folder holds runs.tsv)")
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        for key in ("test_acc", "clean_test_acc"):
            row[key] = float(row[key])
        row["seed"] = int(row["seed"])
    return rows


def comparisons(rows: list[dict]) -> list[Comparison]:
    """Every pair of nets on every schedule, paired by seed, as the report compares them."""
    archs = list(dict.fromkeys(row["arch"] for row in rows))
    schedules = list(dict.fromkeys(row["schedule"] for row in rows))
    by_cell = {}
    for row in rows:
        by_cell.setdefault((row["arch"], row["schedule"]), {})[row["seed"]] = row
    out = []
    for schedule in schedules:
        for a, b in itertools.combinations(archs, 2):
            runs_a, runs_b = by_cell.get((a, schedule), {}), by_cell.get((b, schedule), {})
            seeds = sorted(runs_a.keys() & runs_b.keys())
            if set(runs_a) != set(runs_b):
                raise AnswersError(f"{a} and {b} on {schedule} ran different seeds")
            differences = {
                what: paired_test([get(runs_a[s]) for s in seeds], [get(runs_b[s]) for s in seeds])
                for what, get in MEASURES.items()
            }
            out.append(Comparison(a, b, schedule, differences, []))
    return out


def render(rows: list[dict], power: float, min_difference: float, name: str) -> str:
    """answers.md: both questions, what they could detect, and the seeds needed."""
    compared = comparisons(rows)
    seeds = len({row["seed"] for row in rows})
    m = sum("deformable" in (c.a, c.b) for c in compared)
    return "\n".join(
        [
            f"# {name}: the paper's two questions, framed by what they can detect",
            "",
            f"Written by `python -m dogbreeds answers results/{name}` from `runs.tsv` (one row "
            f"per trained net, {seeds} seeds), with the report's paired t tests over seeds. "
            "The bootstrap over test images and the robustness-curve measure need files this "
            "snapshot does not hold: see `report.md` for them.",
            "",
            *[
                "- " + answer(q, what, compared, seeds, power=power)
                for q, what in QUESTIONS.items()
            ],
            *(["", family_note(m)] if m else []),
            "",
            "## How many seeds would decide",
            "",
            seeds_needed_table(QUESTIONS, compared, power, seeds, min_difference),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds answers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("snapshot", type=Path, help="a folder under results/ with runs.tsv")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="report.power and report.min_difference come from here")  # fmt: skip

    def go() -> None:
        args = parser.parse_args(argv)
        report = load_params(args.params).report
        rows = read_runs(args.snapshot / "runs.tsv")
        text = render(rows, report.power, report.min_difference, args.snapshot.name)
        with atomic_path(args.snapshot / "answers.md") as tmp:
            tmp.write_text(text)
        print(text)

    run_stage(go)
