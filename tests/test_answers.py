"""The answers command: a snapshot's runs.tsv answers the paper's questions as the report does,
framed by what they could detect."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT
from statsmodels.stats.power import TTestPower
from test_report import study  # noqa: F401  (the fake finished study)
from test_snapshot import finished  # noqa: F401

from dogbreeds.analysis import report
from dogbreeds.commands import answers
from dogbreeds.commands import snapshot as snap


def question_lines(markdown: str) -> list[str]:
    """The two questions' answers, without the report's bootstrap sentence."""
    lines = [line for line in markdown.splitlines() if line.startswith("- **Do")]
    return [re.sub(r" Over test images and seeds together.*?\.(?= What it|$)", "", line)
            for line in lines[:2]]  # fmt: skip


def test_a_snapshot_answers_both_questions_as_the_report_does(finished, tmp_path):  # noqa: F811
    params, repo = finished
    folder = snap.snapshot(repo, "fake", tmp_path / "results")
    rows = answers.read_runs(folder / "runs.tsv")
    text = answers.render(rows, params.report.power, params.report.min_difference, "fake")
    ours = question_lines(text)
    theirs = question_lines(report.run_report(params, repo / "metrics"))
    assert len(ours) == 2 and ours == theirs  # the same tests, verdicts and framing

    table = text.split("## How many seeds would decide")[1]
    assert (
        table.strip()
        == report.run_report(params, repo / "metrics")
        .split("## How many seeds would decide")[1]
        .split("\n## ")[0]
        .strip()
    )


def test_what_it_could_detect_is_statsmodels_effect_times_the_sd():
    """Two nets a seed apart on 4 seeds: the detectable difference is the sd of the per-seed
    differences times statsmodels' smallest effect for n = 4 at 0.05."""
    rows = []
    clean = {"cnn": [0.50, 0.52, 0.49, 0.51], "deformable": [0.51, 0.50, 0.52, 0.49]}
    for arch, values in clean.items():
        for seed, value in enumerate(values):
            rows.append({"arch": arch, "schedule": "s", "seed": seed, "run": f"{arch}-s-{seed}",
                         "clean_test_acc": value, "test_acc": value - 0.1})  # fmt: skip
    text = answers.render(rows, 0.8, 0.02, "tiny")
    differences = [d - c for d, c in zip(clean["deformable"], clean["cnn"], strict=True)]
    mean = sum(differences) / 4
    sd = (sum((d - mean) ** 2 for d in differences) / 3) ** 0.5
    effect = TTestPower().solve_power(nobs=4, alpha=0.05, power=0.8)
    assert f"at least {effect * sd:.4f} with 80% power at level 0.05" in text
    assert "The data cannot decide" in text


def test_a_folder_without_runs_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dogbreeds", "answers", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'runs.tsv'}: not found (a snapshot folder holds runs.tsv)"
    ]
    assert not (tmp_path / "answers.md").exists()
