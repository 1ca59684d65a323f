"""The three nets against the report's appendix; DeformConv's two backends against each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dogbreeds.deformconv import DeformConv, default_backend
from dogbreeds.models import (
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


# ----------------------------------------------------------------------------- DeformConv


def random_deformconv(backend: str, cin=3, cout=4, seed=0) -> DeformConv:
    """A float64 DeformConv with large random offsets, so taps land between pixels and outside."""
    torch.manual_seed(seed)
    layer = DeformConv(cin, cout, backend=backend).double()
    nn.init.normal_(layer.offset.weight, std=1.0)
    nn.init.normal_(layer.offset.bias, std=2.0)
    return layer


def test_backends_share_one_state_dict():
    ref, tv = DeformConv(8, 16, backend="reference"), DeformConv(8, 16, backend="torchvision")
    assert ref.state_dict().keys() == tv.state_dict().keys()
    tv.load_state_dict(ref.state_dict())


def test_backends_agree_forward_and_backward():
    ref = random_deformconv("reference")
    tv = random_deformconv("torchvision")
    tv.load_state_dict(ref.state_dict())
    torch.manual_seed(1)
    x_ref = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    x_tv = x_ref.detach().clone().requires_grad_()
    # Some taps fall outside the image, so zero padding is exercised.
    offsets = ref.offset(x_ref).detach()
    assert offsets.abs().max() > 3
    y_ref, y_tv = ref(x_ref), tv(x_tv)
    torch.testing.assert_close(y_ref, y_tv, atol=1e-6, rtol=0)
    grad = torch.randn_like(y_ref)
    y_ref.backward(grad)
    y_tv.backward(grad)
    torch.testing.assert_close(x_ref.grad, x_tv.grad, atol=1e-6, rtol=0)
    for (name, p_ref), (_, p_tv) in zip(ref.named_parameters(), tv.named_parameters(), strict=True):
        assert p_ref.grad.abs().max() > 0, name
        torch.testing.assert_close(p_ref.grad, p_tv.grad, atol=1e-6, rtol=0, msg=name)


def test_gradcheck_reference_backend():
    layer = random_deformconv("reference", cin=2, cout=2)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("backend", ["reference", "torchvision"])
def test_untrained_deformconv_is_a_plain_conv(backend):
    torch.manual_seed(0)
    layer = DeformConv(3, 5, backend=backend).double()
    assert layer.offset.weight.abs().sum() == 0 and layer.offset.bias.abs().sum() == 0
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    expected = F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1)
    torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=0)


def test_checkpoint_moves_between_backends():
    torch.manual_seed(0)
    ref = build_model("deformable", width_mult=0.25, deform_backend="reference").double()
    for p in offset_parameters(ref):
        nn.init.normal_(p, std=0.5)
    tv = build_model("deformable", width_mult=0.25, deform_backend="torchvision").double()
    tv.load_state_dict(ref.state_dict())
    ref.eval(), tv.eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(ref(x), tv(x), atol=1e-8, rtol=0)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="Known: auto, reference, torchvision"):
        DeformConv(3, 3, backend="cuda-fast")


def test_auto_backend_picks_reference_on_cpu():
    assert default_backend("cpu") == "reference"
    assert default_backend("cuda") == "torchvision"
