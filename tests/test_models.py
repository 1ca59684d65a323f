"""The three nets against the report's appendix (DeformConv's backends: test_deformconv.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from dogbreeds.nets.models import (
    MODELS,
    build_model,
    count_macs,
    count_params,
    offset_parameters,
)

APPENDIX = Path(__file__).parent / "appendix"
EXPECTED_PARAMS = {"cnn": 585_383, "dsc": 74_663, "deformable": 621_725}


def read_appendix(name: str) -> tuple[list[tuple[str, list[int], int]], int]:
    """Parse a transcribed appendix table: (layer, output shape, param #) rows and the total."""
    rows, total = [], None
    for line in (APPENDIX / f"{name}.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("Total"):
            total = int(line.split()[1].replace(",", ""))
            continue
        m = re.match(r"(\w+)-\d+\s+\[([-\d, ]+)\]\s+([\d,]+)$", line.strip())
        assert m, line
        shape = [int(v) for v in m.group(2).split(",")]
        rows.append((m.group(1), shape, int(m.group(3).replace(",", ""))))
    return rows, total


def summarize(model: nn.Module, side: int) -> list[tuple[str, list[int], int]]:
    """torchsummary's view: every module but the root and containers, in completion order."""
    rows = []

    def hook(module, _inputs, output):
        own = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append((type(module).__name__, [-1, *output.shape[1:]], own))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if m is not model and not isinstance(m, (nn.Sequential, nn.ModuleList))
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 3, side, side))
    for h in handles:
        h.remove()
    return rows


@pytest.mark.parametrize("name", list(MODELS))
def test_layers_match_the_appendix(name):
    expected, total = read_appendix(name)
    model = build_model(name, deform_backend="reference")
    assert summarize(model, 224) == expected
    assert count_params(model) == total == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("side", [32, 64, 160])
def test_forward_gives_log_probabilities(name, side):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, width_mult=0.5)
    out = model(torch.randn(3, 3, side, side))
    assert out.shape == (3, 5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.exp().sum(1), torch.ones(3))


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match="Known: cnn, dsc, deformable"):
        build_model("resnet")


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_width_multiplier_scales_every_layer(alpha):
    wide, narrow = build_model("cnn"), build_model("cnn", width_mult=alpha)
    for a, b in zip(wide.modules(), narrow.modules(), strict=True):
        if isinstance(a, nn.Conv2d):
            assert b.out_channels == max(1, round(a.out_channels * alpha))
    assert count_params(narrow) < count_params(wide)
    # Tiny alpha still leaves one channel per layer and a working net.
    assert build_model("dsc", width_mult=0.001)(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_macs_scale_with_resolution_squared():
    model = build_model("cnn")
    assert count_macs(model, 112) * 4 == pytest.approx(count_macs(model, 224), rel=0.01)
    assert 500e6 < count_macs(model, 224) < 560e6  # 531 M by hand from the layer shapes


def test_offset_parameters_are_the_offset_convs():
    model = build_model("deformable")
    offsets = offset_parameters(model)
    assert sum(p.numel() for p in offsets) == 5_202 + 10_386 + 20_754
    assert offset_parameters(build_model("cnn")) == []


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("alpha", "side"), [(1.0, 64), (0.5, 48), (0.75, 33)])
def test_macs_are_what_torch_flop_counter_counts(name, alpha, side):
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(name, width_mult=alpha, deform_backend="reference").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, side, side))
    assert count_macs(model, side) == counter.get_total_flops() // 2
    # The count does not depend on the backend that runs DeformConv, nor change the net.
    gather = build_model(name, width_mult=alpha, deform_backend="gather").train()
    assert count_macs(gather, side) == count_macs(model, side)
    assert gather.training
