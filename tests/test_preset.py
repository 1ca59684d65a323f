"""Presets of params (dogbreeds.commands.preset, presets/*.yaml): the tiny study above all,
which the tests' projects, the unit tests' params, `fixedcost` and `make smoke` share."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from dogbreeds.commands import preset
from dogbreeds.params import parse_params, read_yaml


def committed() -> dict:
    return read_yaml(ROOT / "params.yaml")


@pytest.mark.parametrize("name", preset.names())
def test_every_preset_sets_existing_keys_to_valid_params(name: str) -> None:
    tree = preset.apply(committed(), name)
    parse_params(tree)  # raises on a wrong type or value
    for key, value in preset.overrides(name).items():
        node = tree
        for part in key.split("."):
            node = node[part]
        assert node == value, key


def test_the_tiny_study_is_tiny_in_every_schedule_params_yaml_has() -> None:
    params = parse_params(preset.apply(committed(), "tiny"))
    schedules = params.train.schedules
    assert set(schedules) == set(committed()["train"]["schedules"])  # none left at full length
    assert all(sum(schedule.epochs) <= 3 for schedule in schedules.values())
    assert params.data.sources == ["synthetic"] and params.train.seeds == [0]
    assert params.train.device == "cpu"


def test_dvc_reads_the_printed_options_as_the_preset(tmp_path: Path) -> None:
    """`dvc exp run $(python -m dogbreeds preset tiny)` sets what `apply` sets, through DVC's
    own -S code, and the output splits on spaces into one option per key."""
    from dvc.utils.hydra import apply_overrides

    printed = subprocess.run(
        [sys.executable, "-m", "dogbreeds", "preset", "tiny"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert printed == preset.set_options("tiny")
    assert printed[::2] == ["-S"] * len(preset.overrides("tiny"))
    params_file = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params_file)
    apply_overrides(params_file, printed[1::2])
    assert read_yaml(params_file) == preset.apply(committed(), "tiny")


def test_values_are_spelt_as_dvc_reads_them_back() -> None:
    assert preset.spelt([1, 2]) == "[1,2]"
    assert preset.spelt({"a": [0.01, True, None]}) == "{a:[0.01,true,null]}"
    assert preset.spelt("cpu") == "cpu" and preset.spelt(5e-05) == "5e-05"
    for unsafe in ("two words", "12", "true", "a'b"):
        with pytest.raises(ValueError, match="not a value"):
            preset.spelt(unsafe)


def test_a_misspelt_key_or_unknown_preset_is_an_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(preset, "PRESETS", tmp_path)
    (tmp_path / "typo.yaml").write_text("train.seed: [0]\n")
    with pytest.raises(KeyError, match="train.seed is not a params key"):
        preset.apply(committed(), "typo")
    with pytest.raises(ValueError, match="no preset 'nope'.*known: typo"):
        preset.overrides("nope")
    (tmp_path / "list.yaml").write_text("- train.seeds\n")
    with pytest.raises(ValueError, match="a mapping of dotted params keys"):
        preset.overrides("list")
