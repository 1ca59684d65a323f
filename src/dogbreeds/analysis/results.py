"""What the stages wrote about each trained net, read back for the report.

A `RunResult` is one (arch, schedule, seed): its train and eval metrics, its per-epoch history,
its per-image predictions and its robustness curve, all from `metrics/`. The report never
builds a net or imports the kernels: sizes come from the train stage's metrics too.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from dogbreeds import DogbreedsError
from dogbreeds.analysis.stats import Interval
from dogbreeds.params import Params, Schedule, run_name
from dogbreeds.training.history import EpochRecord, read_history


class ReportError(DogbreedsError):
    """A metrics file the report needs is missing or unreadable; the message names it."""


@dataclass
class RunResult:
    """Everything the report shows about one trained net: one (arch, schedule, seed)."""

    arch: str
    schedule: Schedule
    seed: int
    train: dict  # metrics/train/<run>.json
    eval: dict  # metrics/eval/<run>.json
    history: list[EpochRecord]  # metrics/train/<run>.tsv
    predictions: list[dict[str, str]]  # metrics/eval/<run>-predictions.csv, one row per image
    robustness: dict  # metrics/eval/<run>-robustness.json: {kind: {strength: acc}}

    @property
    def name(self) -> str:
        return run_name(self.arch, self.schedule.name, self.seed)

    @property
    def test_images(self) -> int:
        return len(self.predictions)

    def value(self, row: str) -> float:
        """A results-table row: train/val from the last epoch, test from the evaluation."""
        return self.eval[row] if row.startswith(("test", "clean_test")) else self.train[row]

    def predicted(self, split: str) -> dict[str, tuple[int, int]]:
        """Image id -> (label, predicted class) on `split` ("test" or "clean_test")."""
        return {r["id"]: (int(r["label"]), int(r[split])) for r in self.predictions}


def read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: not found (run the train and evaluate stages first)") from None
    except ValueError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


def read_predictions(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise ReportError(f"{path}: not found (run the evaluate stages first)") from None


def load_results(params: Params, metrics_dir: Path) -> list[RunResult]:
    """The results of every (arch, schedule, seed) in params, in params order."""
    results = []
    for arch in params.train.archs:
        for schedule in params.train.schedules.values():
            for seed in params.train.seeds:
                name = run_name(arch, schedule.name, seed)
                results.append(
                    RunResult(
                        arch=arch,
                        schedule=schedule,
                        seed=seed,
                        train=read_json(metrics_dir / "train" / f"{name}.json"),
                        eval=read_json(metrics_dir / "eval" / f"{name}.json"),
                        history=read_history(metrics_dir / "train" / f"{name}.tsv"),
                        predictions=read_predictions(
                            metrics_dir / "eval" / f"{name}-predictions.csv"
                        ),
                        robustness=read_json(metrics_dir / "eval" / f"{name}-robustness.json"),
                    )
                )
    return results


def cell(runs: list[RunResult], arch: str, schedule: str) -> list[RunResult]:
    """The runs of one (arch, schedule), in seed order (params order)."""
    return [r for r in runs if r.arch == arch and r.schedule.name == schedule]


def fmt_number(value: float, signed: bool = False) -> str:
    """'0.4400', or '+0.4400' signed; float noise around 0 prints as +0.0000, not -0.0000."""
    value = value if abs(value) > 1e-12 else 0.0
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def fmt_interval(interval: Interval, signed: bool = False) -> str:
    """'0.4400 [0.4007, 0.4793]'; the mean alone when one seed gives no interval."""
    mean = fmt_number(interval.mean, signed)
    if interval.n < 2:
        return mean
    return f"{mean} [{fmt_number(interval.low, signed)}, {fmt_number(interval.high, signed)}]"


def drop(run: RunResult) -> float:
    """What the deformations cost one net: deformed minus clean test accuracy (<= 0 usually)."""
    return run.eval["test_acc"] - run.eval["clean_test_acc"]


def curve_drop(run: RunResult) -> float:
    """What the deformations cost one net along its `all` robustness curve: the mean over the
    strengths above 0 of accuracy minus the clean (strength 0) accuracy."""
    curve = run.robustness["all"]
    deformed = [acc for strength, acc in curve.items() if float(strength) > 0]
    return math.fsum(deformed) / len(deformed) - curve["0"]
