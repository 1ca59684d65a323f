"""The study's curves laid out for `dvc plots`: one column per net, so DVC draws one line each.

dvc-render tells series apart by revision, file and field only. A long table such as
metrics/robustness.tsv (a row per schedule, kind, net and strength) is one series to it, and a
run's own history file one chart per run. So the report stage also writes, under
metrics/plots/ (x first, then per net in params order):

- robustness/<schedule>-<kind>.tsv: `strength`; `<arch>` the mean test accuracy over seeds,
  `<arch>_low` and `<arch>_high` its 95% t interval (empty with one seed);
- train/<schedule>.tsv: `epoch`; `<arch>_train_acc`, `<arch>_val_acc`, `<arch>_train_loss`,
  `<arch>_val_loss`, each the mean over seeds of the runs' metrics/train/<run>.tsv.

dvc.yaml's top-level `plots:` puts the nets on one chart per file, so `dvc plots diff a b`
draws two experiments on the same axes (docs/experiments.md).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from dogbreeds.analysis.results import ReportError, RunResult, cell
from dogbreeds.common.fs import atomic_path
from dogbreeds.params import Params

PLOTS_DIR = "plots"  # under the metrics folder
CURVE_METRICS = ("train_acc", "val_acc", "train_loss", "val_loss")


def fmt(value: float) -> str:
    """6 significant digits, as the history files; an interval one seed cannot give is empty."""
    return "" if math.isnan(value) else f"{value:.6g}"


def robustness_columns(archs: list[str]) -> list[str]:
    return ["strength"] + [f"{arch}{end}" for arch in archs for end in ("", "_low", "_high")]


def curve_columns(archs: list[str]) -> list[str]:
    return ["epoch"] + [f"{arch}_{metric}" for arch in archs for metric in CURVE_METRICS]


def robustness_wide(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(schedule, kind) -> one row per strength with each net's mean and 95% CI bounds, from
    the long rows of `cells.robustness_curves` (metrics/robustness.tsv)."""
    tables: dict[tuple[str, str], dict[float, dict]] = {}
    for row in rows:
        table = tables.setdefault((row["schedule"], row["kind"]), {})
        wide = table.setdefault(row["strength"], {"strength": f"{row['strength']:g}"})
        arch = row["arch"]
        wide.update({arch: fmt(row["mean"]), f"{arch}_low": fmt(row["low"])})
        wide[f"{arch}_high"] = fmt(row["high"])
    return {key: [table[s] for s in sorted(table)] for key, table in tables.items()}


def mean_curves(runs: list[RunResult], archs: list[str], schedule: str) -> list[dict]:
    """One row per epoch of `schedule`: each net's train/val accuracy and loss, mean over its
    seeds' histories (every seed of a schedule trains the same epochs)."""
    rows: list[dict] = []
    for arch in archs:
        seeds = cell(runs, arch, schedule)
        if not seeds:
            raise ReportError(f"no run of {arch} on schedule {schedule} to draw")
        lengths = {len(r.history) for r in seeds}
        if len(lengths) != 1:
            raise ReportError(
                f"metrics/train/{seeds[0].name}.tsv and its other seeds differ in epochs "
                f"({sorted(lengths)}): rerun the train stages (dvc repro)"
            )
        for i, records in enumerate(zip(*(r.history for r in seeds), strict=True)):
            if i == len(rows):
                rows.append({"epoch": records[0].epoch})
            for metric in CURVE_METRICS:
                mean = math.fsum(getattr(r, metric) for r in records) / len(records)
                rows[i][f"{arch}_{metric}"] = fmt(mean)
    return rows


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_dvc_plots(
    params: Params, runs: list[RunResult], curves: list[dict], metrics_dir: Path
) -> list[Path]:
    """Write metrics/plots/ (the wide robustness files and the per-schedule training curves)
    in one atomic step; `curves` are the rows of `cells.robustness_curves`. Returns the files,
    relative to `metrics_dir`."""
    archs = list(params.train.archs)
    written = []
    with atomic_path(metrics_dir / PLOTS_DIR) as folder:
        folder.mkdir()
        for (schedule, kind), rows in robustness_wide(curves).items():
            name = Path("robustness") / f"{schedule}-{kind}.tsv"
            write_rows(folder / name, rows, robustness_columns(archs))
            written.append(Path(PLOTS_DIR) / name)
        for schedule in params.train.schedules:
            name = Path("train") / f"{schedule}.tsv"
            write_rows(folder / name, mean_curves(runs, archs, schedule), curve_columns(archs))
            written.append(Path(PLOTS_DIR) / name)
    return written
