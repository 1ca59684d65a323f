"""Per-cell tables: our runs of one (net, schedule) over seeds, beside the paper's one run.

A cell's accuracy is a mean over seeds with a 95% t interval. The paper trained one net per
cell, so its number is held against the 95% prediction interval of one run (where a single
run of ours would fall), not against the CI of our mean: the CI shrinks with more seeds and a
single run does not, so "outside the CI" is expected even for a typical run.
"""

from __future__ import annotations

from dogbreeds.analysis.paper import PAPER_RESULTS, ROWS, paper_column, schedule_label
from dogbreeds.analysis.results import ReportError, RunResult, cell, drop, fmt_interval
from dogbreeds.analysis.stats import Interval, prediction_interval, t_interval
from dogbreeds.params import Params


def results_table(runs: list[RunResult]) -> str:
    """One net's results, rows = (metric, schedule): the paper's run, our mean with its 95% CI,
    the 95% prediction interval of one run, the per-seed values, and whether the paper's run
    lies inside the prediction interval."""
    lines = [
        "| metric | schedule | paper | ours: mean [95% CI] | one run: 95% PI | per seed "
        "| paper in PI |",
        "|---|---|---:|---:|---:|---|:---:|",
    ]
    schedules = list(dict.fromkeys(r.schedule.name for r in runs))
    for row in ROWS:
        for name in schedules:
            seeds = [r for r in runs if r.schedule.name == name]
            values = [r.value(row) for r in seeds]
            predicted = prediction_interval(values)
            column = paper_column(seeds[0].schedule)
            label = f"{name} ({schedule_label(seeds[0].schedule)})"
            if column is None:
                paper, inside = "-", "-"
            else:
                number = PAPER_RESULTS[seeds[0].arch][row][column]
                contains = predicted.contains(number)
                paper = f"{number:.4f}"
                inside = "-" if contains is None else ("yes" if contains else "no")
            pi = f"[{predicted.low:.4f}, {predicted.high:.4f}]" if predicted.n > 1 else "-"
            per_seed = ", ".join(f"{v:.4f}" for v in values)
            lines.append(
                f"| {row} | {label} | {paper} | {fmt_interval(t_interval(values))} | {pi} "
                f"| {per_seed} | {inside} |"
            )
    return "\n".join(lines)


def robustness_table(params: Params, runs: list[RunResult]) -> str:
    """Clean and deformed test accuracy and their difference, mean [95% CI] over seeds."""
    lines = [
        "| net | schedule | clean test acc | deformed test acc | Δ (deformed − clean) |",
        "|---|---|---:|---:|---:|",
    ]
    for arch in params.train.archs:
        for schedule in params.train.schedules:
            seeds = cell(runs, arch, schedule)
            clean = t_interval([r.eval["clean_test_acc"] for r in seeds])
            deformed = t_interval([r.eval["test_acc"] for r in seeds])
            delta = t_interval([drop(r) for r in seeds])
            lines.append(
                f"| {arch} | {schedule} | {fmt_interval(clean)} | {fmt_interval(deformed)} "
                f"| {fmt_interval(delta, signed=True)} |"
            )
    return "\n".join(lines)


ROBUSTNESS_COLUMNS = ("schedule", "kind", "arch", "strength", "mean", "low", "high", "n", "seeds")


def robustness_curves(params: Params, runs: list[RunResult]) -> list[dict]:
    """Mean test accuracy and 95% CI over seeds per (schedule, kind, arch, strength): the rows
    of metrics/robustness.tsv (a DVC plot) and of the robustness figure."""
    rows = []
    for schedule in params.train.schedules:
        for kind in params.robustness.kinds:
            for arch in params.train.archs:
                seeds = cell(runs, arch, schedule)
                for strength in params.robustness.strengths:
                    key = f"{strength:g}"
                    try:
                        values = [r.robustness[kind][key] for r in seeds]
                    except KeyError:
                        raise ReportError(
                            f"metrics/eval/{seeds[0].name}-robustness.json: no {kind} at "
                            f"strength {key} (rerun the evaluate stages: dvc repro)"
                        ) from None
                    interval = t_interval(values)
                    rows.append(
                        {
                            "schedule": schedule,
                            "kind": kind,
                            "arch": arch,
                            "strength": strength,
                            "mean": interval.mean,
                            "low": interval.low,
                            "high": interval.high,
                            "n": interval.n,
                            "seeds": ", ".join(f"{v:.4f}" for v in values),
                        }
                    )
    return rows


def robustness_curves_table(rows: list[dict], strengths: tuple[float, ...] = (1.0, 2.0)) -> str:
    """Test accuracy per net, schedule and kind at the study's strength (1) and twice it."""
    shown = [s for s in strengths if any(r["strength"] == s for r in rows)]
    lines = [
        "| net | schedule | kind | "
        + " | ".join(f"strength {s:g}: mean [95% CI]" for s in shown)
        + " |",
        "|---|---|---|" + "---:|" * len(shown),
    ]
    keys = list(dict.fromkeys((r["arch"], r["schedule"], r["kind"]) for r in rows))
    for arch, schedule, kind in sorted(keys, key=lambda k: (k[1], k[2])):
        cells = []
        for strength in shown:
            (row,) = [
                r
                for r in rows
                if (r["arch"], r["schedule"], r["kind"], r["strength"])
                == (arch, schedule, kind, strength)
            ]
            cells.append(fmt_interval(Interval(row["mean"], row["low"], row["high"], row["n"])))
        lines.append(f"| {arch} | {schedule} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
