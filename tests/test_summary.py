"""`python -m dogbreeds summary`: the params/MACs table."""

from __future__ import annotations

from dogbreeds.commands.summary import main
from dogbreeds.nets.models import build_model, count_params


def test_summary_command_prints_a_table(capsys):
    main(["--width-mult", "0.5", "--resolution", "64"])
    out = capsys.readouterr().out
    assert "| cnn (DogBreedClassificationCNN) |" in out
    assert f"{count_params(build_model('dsc', width_mult=0.5)):,}" in out
