"""The data stages end to end through `dvc repro`, on the synthetic source in a temp repo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import run, set_params

DATA_STAGES = ["download", "merge", "split", "deform", "preview"]


def stages_run(output: str) -> list[str]:
    """The stages `dvc repro` actually ran (not skipped as unchanged), in order."""
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.mark.slow
def test_repro_builds_the_data_then_reruns_only_what_changed(project: Path) -> None:
    first = run(["dvc", "repro", "preview"], project)
    assert stages_run(first.stdout) == DATA_STAGES

    test = torch.load(project / "data/prepared/test.pt", weights_only=True)
    assert test["images"].shape[1:] == (3, 32, 32) and test["images"].dtype == torch.uint8
    metrics = json.loads((project / "metrics/data.json").read_text())
    assert metrics["images"]["total"] == 7 * 12  # synthetic: nothing is a duplicate
    assert metrics["rejected"]["total"] == 0
    assert (project / "metrics/deform_preview.png").stat().st_size > 0

    second = run(["dvc", "repro", "preview"], project)
    assert stages_run(second.stdout) == []
    assert "didn't change" in second.stdout
    assert "up to date" in run(["dvc", "status", "deform"], project).stdout

    set_params(project, **{"split.seed": 1})
    third = run(["dvc", "repro", "preview"], project)
    assert stages_run(third.stdout) == ["split", "deform", "preview"]

    # A change of figure style redraws the preview and reruns nothing else.
    plots = project / "src/dogbreeds/analysis/plots.py"
    plots.write_text(plots.read_text() + "\n# style\n")
    assert stages_run(run(["dvc", "repro", "preview"], project).stdout) == ["preview"]


@pytest.mark.slow
def test_a_failing_stage_prints_one_line_and_leaves_no_output(project: Path) -> None:
    archive = project / "images.tar"
    archive.write_bytes(b"not really a tar")
    set_params(project, **{
        "data.sources": ["synthetic", "stanford"],
        "data.stanford.url": "images.tar",
        "data.stanford.sha256": "0" * 64,
    })  # fmt: skip
    result = run(["python", "stages/download.py"], project, check=False, env={"PYTHONPATH": "src"})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "not a tar archive" in lines[0] and "data.stanford" in lines[0]
    assert not (project / "data" / "raw").exists()
