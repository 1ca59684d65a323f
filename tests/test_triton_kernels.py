"""The `triton` DeformConv backend (triton_kernels.py) against `gather`, on CUDA or interpreted.

CI has no GPU, so these tests run twice over: on a CUDA machine they run the compiled kernels
directly; elsewhere `test_kernels_under_the_interpreter` runs them (and the `triton` cases of
test_deformconv.py) in a subprocess under Triton's CPU interpreter (TRITON_INTERPRET=1, which
must be set before Triton is imported). The interpreter executes the same kernel source with
numpy, so indexing, masking and the gradient formulas are checked here; speed is not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_deformconv import shifted_ramp_error
from torch import nn

from dogbreeds.ops.deform_conv import (
    ColumnDeformConv,
    DeformConv,
    GatherSampler,
    triton_interpreted,
)

HERE = Path(__file__).parent
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
runs_triton = pytest.mark.skipif(
    not (torch.cuda.is_available() or triton_interpreted()),
    reason="needs CUDA or TRITON_INTERPRET=1 (test_kernels_under_the_interpreter sets it)",
)


@pytest.mark.skipif(
    torch.cuda.is_available() or triton_interpreted(), reason="the kernels run directly here"
)
def test_kernels_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    tests = [str(HERE / "test_triton_kernels.py"), str(HERE / "test_deformconv.py")]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, "-k",
               "triton and not under_the_interpreter"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=HERE.parent)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1]


def sampled(x, offset, K=3, dtype=None):
    """(columns, saved) from the Triton kernels, with x and offset on DEVICE."""
    from dogbreeds.ops import triton_kernels

    x, offset = x.to(DEVICE), offset.to(DEVICE)
    return triton_kernels.deform_im2col(x, offset, K, dtype or x.dtype), (x, offset)


@runs_triton
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_triton_columns_and_gradients_match_gather_in_float64(layout):
    """Columns, grad x and grad offset equal gather's to 1e-12, whatever the input's strides."""
    from dogbreeds.ops import triton_kernels

    torch.manual_seed(0)
    B, C, H, W = 2, 5, 6, 7
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    offset = 2.5 * torch.randn(B, 18, H, W, dtype=torch.float64)  # many taps land outside
    ref, saved = GatherSampler.columns(x, offset, 3, torch.float64)
    grad_cols = torch.randn(ref.shape, dtype=torch.float64)
    ref_x, ref_offset = GatherSampler.backward(saved, grad_cols, (B, C, H, W, 3), True, True)
    if layout == "sliced":  # every other column of wider tensors: strided, not dense
        x_dev = torch.repeat_interleave(x, 2, dim=3).to(DEVICE)[..., ::2]
        offset_dev = torch.repeat_interleave(offset, 2, dim=3).to(DEVICE)[..., ::2]
    else:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        x_dev = x.to(DEVICE).contiguous(memory_format=fmt)
        offset_dev = offset.to(DEVICE).contiguous(memory_format=fmt)
    cols = triton_kernels.deform_im2col(x_dev, offset_dev, 3, torch.float64)
    torch.testing.assert_close(cols.cpu(), ref, atol=1e-12, rtol=0)
    grad_x, grad_offset = triton_kernels.deform_col2im(x_dev, offset_dev, grad_cols.to(DEVICE), 3)
    torch.testing.assert_close(grad_x.cpu(), ref_x, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_offset.cpu(), ref_offset, atol=1e-12, rtol=0)
    if layout != "sliced":
        assert grad_offset.stride() == offset_dev.stride()
    only_x = triton_kernels.deform_col2im(x_dev, offset_dev, grad_cols.to(DEVICE), 3, True, False)
    only_offset = triton_kernels.deform_col2im(
        x_dev, offset_dev, grad_cols.to(DEVICE), 3, False, True
    )
    assert only_x[1] is None and only_offset[0] is None
    torch.testing.assert_close(only_x[0], grad_x, atol=1e-12, rtol=0)
    torch.testing.assert_close(only_offset[1], grad_offset, atol=0, rtol=0)


@runs_triton
def test_gradcheck_triton_column_function():
    """Analytic vs numerical gradients (gradcheck's fast mode: random projections, so a few
    dozen kernel calls instead of one per input element)."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    offset = (2 * torch.randn(1, 18, 4, 5, dtype=torch.float64, device=DEVICE)).requires_grad_()
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def deform_conv(*args):
        return ColumnDeformConv.apply(*args, 3, torch.float64, "triton")

    assert torch.autograd.gradcheck(
        deform_conv, (x, offset, weight, bias), fast_mode=True, nondet_tol=1e-12
    )  # the input gradient is summed with atomics on the GPU: not bit-reproducible


@runs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_triton_half_columns_are_float32_columns_rounded_once(dtype):
    """Half-precision input and columns: blended in float32 from the exact half values and
    rounded once, bit for bit what converting float32 columns afterwards gives."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 4).to(dtype)
    offset = 3 * torch.randn(2, 18, 5, 4)
    full, _ = sampled(x.float(), offset, dtype=torch.float32)
    half, saved = sampled(x, offset, dtype=dtype)
    assert half.dtype == dtype
    if DEVICE.type == "cuda" or dtype == torch.float16:
        assert torch.equal(half, full.to(dtype))
    else:  # the interpreter (numpy has no bf16) truncates to bf16 instead of rounding
        ulp = full.to(dtype).float().abs() * 2.0**-7
        assert ((half.float() - full.to(dtype).float()).abs() <= ulp).all()
    from dogbreeds.ops import triton_kernels

    grad = torch.randn(full.shape).to(dtype).to(DEVICE)
    for a, b in zip(
        triton_kernels.deform_col2im(*saved, grad, 3),
        triton_kernels.deform_col2im(saved[0].float(), saved[1], grad.float(), 3),
        strict=True,
    ):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@runs_triton
def test_triton_handles_far_and_edge_positions():
    """A tap shifted 1e6 px reads zeros (the output is exactly the bias); edges blend with 0."""
    torch.manual_seed(0)
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    ref = DeformConv(2, 3, backend="gather").double()
    fast = DeformConv(2, 3, backend="triton").double().to(DEVICE)
    for shift in (1e6, -1e6, 4.5, -0.5, -1.0):
        with torch.no_grad():
            ref.offset.bias.fill_(shift)
            fast.load_state_dict(ref.state_dict())
            torch.testing.assert_close(fast(x.to(DEVICE)).cpu(), ref(x), atol=1e-12, rtol=0)
    expected = ref.conv.bias.detach().view(1, 3, 1, 1).expand(1, 3, 5, 5)
    with torch.no_grad():
        fast.offset.bias.fill_(1e6)
        torch.testing.assert_close(fast(x.to(DEVICE)).cpu(), expected, atol=0, rtol=0)


@runs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_triton_subpixel_offsets_survive_autocast(dtype):
    """The +0.25 px sine-ramp test of test_deformconv.py, under autocast on the kernels' device
    (float32 positions: error < 0.015; bf16 positions would lose the shift, error ~0.17)."""
    assert shifted_ramp_error("triton", dtype, device=DEVICE.type) < 0.02


@runs_triton
def test_triton_net_trains_like_gather():
    """A deformable net's loss gradient through 3 triton DeformConvs equals gather's (float64)."""
    from dogbreeds.nets.models import build_model, offset_parameters

    torch.manual_seed(0)
    nets = {b: build_model("deformable", width_mult=0.25, deform_backend=b) for b in ("gather",
            "triton")}  # fmt: skip
    source = nets["gather"].double()
    for p in offset_parameters(source):
        nn.init.normal_(p, std=0.5)
    net = nets["triton"].double()
    net.load_state_dict(source.state_dict())
    net.to(DEVICE)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    source(x).sum().backward()
    net(x.to(DEVICE)).sum().backward()
    for (name, a), (_, b) in zip(source.named_parameters(), net.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad.cpu(), a.grad, atol=1e-9, rtol=1e-9, msg=name)
