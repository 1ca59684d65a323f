"""Learned offsets: read through hooks, measured in pixels, drawn where the taps sample."""

from __future__ import annotations

import json

import pytest
import torch
from datagen import tiny_params

from dogbreeds.analysis import offsets
from dogbreeds.data.prepared import load_split
from dogbreeds.data.preprocess import Normalize
from dogbreeds.nets.models import build_model
from dogbreeds.training.checkpoint import save_checkpoint


def net_with_constant_offsets(dy: float, dx: float) -> torch.nn.Module:
    """A 16px deformable net whose every tap is shifted by (dy, dx) on every image."""
    model = build_model("deformable", width_mult=0.25).eval()
    with torch.no_grad():
        for layer in offsets.deform_layers(model).values():
            layer.offset.bias[0::2] = dy  # torchvision's layout: (dy, dx) per tap
            layer.offset.bias[1::2] = dx
    return model


def test_zero_offsets_sample_the_regular_grid_and_shifts_move_it():
    zero = torch.zeros(18, 16, 16)
    grid = offsets.sampling_positions(zero, 5, 7, side=16)
    assert grid.tolist()[:3] == [[4.0, 6.0], [4.0, 7.0], [4.0, 8.0]]  # first row of taps
    assert grid[4].tolist() == [5.0, 7.0]  # the centre tap is the pixel itself
    shifted = zero.clone()
    shifted[0::2] = 1.0  # dy = +1 on every tap
    assert torch.equal(offsets.sampling_positions(shifted, 5, 7, 16), grid + torch.tensor([1, 0]))
    # a 4x4 feature map of a 16px image: pixel 2 is centred at image pixel (2 + 0.5) * 4 - 0.5
    assert offsets.sampling_positions(torch.zeros(18, 4, 4), 2, 2, 16)[4].tolist() == [9.5, 9.5]


def test_mean_offsets_are_the_tap_shift_lengths_per_layer():
    model = net_with_constant_offsets(3.0, 4.0)
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    normalize = Normalize([0.5] * 3, [0.25] * 3, torch.device("cpu"))
    means = offsets.mean_offsets(model, images, normalize, batch_size=2)
    assert list(means) == list(offsets.deform_layers(model)) and len(means) == 3
    assert means == pytest.approx(dict.fromkeys(means, 5.0))  # |(3, 4)| = 5
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


def test_run_offsets_writes_means_and_a_figure_per_deformable_net(prepared, tmp_path):
    params = tiny_params(**{"train.seeds": [0]})
    model = net_with_constant_offsets(0.5, 0.0)
    breeds = load_split(prepared / "test.pt").breeds
    meta = {"arch": "deformable", "width_mult": 0.25, "deform_backend": "auto", "breeds": breeds,
            "resolution": 16, "mean": [0.5] * 3, "std": [0.25] * 3}  # fmt: skip
    save_checkpoint(
        tmp_path / "models/deformable-tiny-0.pt",
        model,
        {**meta, "mean": [0.5] * 3, "std": [0.25] * 3},
    )
    out = tmp_path / "offsets"
    results = offsets.run_offsets(params, prepared, tmp_path / "models", out)

    assert list(results) == ["deformable-tiny-0"]
    for layer in results["deformable-tiny-0"].values():
        assert layer == pytest.approx({"clean": 0.5, "deformed": 0.5})
    assert json.loads((out / "offsets.json").read_text()) == results
    assert (out / "offsets-deformable-tiny-0.png").read_bytes()[:4] == b"\x89PNG"


def test_without_the_deformable_net_there_is_nothing_to_measure(prepared, tmp_path):
    params = tiny_params(**{"train.archs": ["cnn"]})
    assert offsets.run_offsets(params, prepared, tmp_path / "models", tmp_path / "o") == {}
    assert json.loads((tmp_path / "o/offsets.json").read_text()) == {}
