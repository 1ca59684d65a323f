"""DeformConv's backends against each other, against a plain conv, and under mixed precision."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dogbreeds.nets.models import build_model, offset_parameters
from dogbreeds.ops import cpu_kernel as kernels
from dogbreeds.ops import deform_conv as deformconv
from dogbreeds.ops.deform_conv import (
    BACKENDS,
    CUDA_ONLY,
    ColumnDeformConv,
    DeformConv,
    default_backend,
    triton_interpreted,
)

# Every backend that runs on the CPU here: reference, gather, fused, torchvision, and triton
# under Triton's interpreter (test_triton_kernels.py runs this file's triton cases so).
CONCRETE = [b for b in BACKENDS if b != "auto" and (b not in CUDA_ONLY or triton_interpreted())]
FAST = [b for b in CONCRETE if b != "reference"]


def random_deformconv(backend: str, cin=3, cout=4, seed=0) -> DeformConv:
    """A float64 DeformConv with large random offsets, so taps land between pixels and outside."""
    torch.manual_seed(seed)
    layer = DeformConv(cin, cout, backend=backend).double()
    nn.init.normal_(layer.offset.weight, std=1.0)
    nn.init.normal_(layer.offset.bias, std=2.0)
    return layer


def test_backends_share_one_state_dict():
    layers = [DeformConv(8, 16, backend=b) for b in CONCRETE]
    for layer in layers[1:]:
        assert layer.state_dict().keys() == layers[0].state_dict().keys()
        layer.load_state_dict(layers[0].state_dict())


@pytest.mark.parametrize("backend", FAST)
def test_backends_agree_forward_and_backward(backend):
    ref = random_deformconv("reference")
    other = random_deformconv(backend, seed=1)
    other.load_state_dict(ref.state_dict())
    torch.manual_seed(1)
    x_ref = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    x_other = x_ref.detach().clone().requires_grad_()
    # Some taps fall outside the image, so zero padding is exercised.
    offsets = ref.offset(x_ref).detach()
    assert offsets.abs().max() > 3
    y_ref, y_other = ref(x_ref), other(x_other)
    torch.testing.assert_close(y_ref, y_other, atol=1e-6, rtol=0)
    grad = torch.randn(y_ref.shape, dtype=torch.float64)  # not randn_like: layouts may differ
    y_ref.backward(grad)
    y_other.backward(grad)
    torch.testing.assert_close(x_ref.grad, x_other.grad, atol=1e-6, rtol=0)
    pairs = zip(ref.named_parameters(), other.named_parameters(), strict=True)
    for (name, p_ref), (_, p_other) in pairs:
        assert p_ref.grad.abs().max() > 0, name
        torch.testing.assert_close(p_ref.grad, p_other.grad, atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bf16"])
def test_weight_gradient_split_across_threads_equals_one_matmul(dtype, monkeypatch):
    """The CPU weight gradient split into one bmm batch per thread sums to g.t() @ cols."""
    monkeypatch.setattr(deformconv, "SPLIT_MIN_ROWS", 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        g, cols = torch.randn(96, 5, dtype=dtype), torch.randn(96, 27, dtype=dtype)
        split = deformconv.weight_gradient(g, cols)
        whole = deformconv.weight_gradient(g[:95], cols[:95])  # 95 rows: not split
        torch.set_num_threads(1)
        one_thread = deformconv.weight_gradient(g, cols)  # one thread: not split
    finally:
        torch.set_num_threads(threads)
    exact = g.double().t() @ cols.double()
    assert split.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert whole.dtype == one_thread.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 0.05  # bf16: partials rounded to 8 bits
    torch.testing.assert_close(split.double(), exact, atol=tol, rtol=tol)
    torch.testing.assert_close(one_thread.double(), exact, atol=tol, rtol=tol)
    torch.testing.assert_close(whole.double(), g[:95].double().t() @ cols[:95].double(),
                               atol=tol, rtol=tol)  # fmt: skip


def test_gradcheck_reference_backend():
    layer = random_deformconv("reference", cin=2, cout=2)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("sampler", ["gather", "fused"])
def test_gradcheck_column_function(sampler):
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    offset = (2 * torch.randn(1, 18, 4, 5, dtype=torch.float64)).requires_grad_()
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def deform_conv(*args):
        return ColumnDeformConv.apply(*args, 3, torch.float64, sampler)

    assert torch.autograd.gradcheck(deform_conv, (x, offset, weight, bias))


@pytest.mark.parametrize("backend", CONCRETE)
def test_untrained_deformconv_is_a_plain_conv(backend):
    torch.manual_seed(0)
    layer = DeformConv(3, 5, backend=backend).double()
    assert layer.offset.weight.abs().sum() == 0 and layer.offset.bias.abs().sum() == 0
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    expected = F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1)
    torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=0)


def shifted_ramp_error(
    backend: str, dtype: torch.dtype, side: int = 112, device: str = "cpu"
) -> float:
    """Max error of a DeformConv that shifts every tap by +0.25 px down, over a sine ramp.

    The ramp varies along rows (period 16 px), the conv keeps only its centre tap, so the
    output should be the ramp at row + 0.25; bilinear interpolation itself is off by < 0.015
    and rounding the input to half precision by < 0.004.
    In bf16 a row position like 100.25 does not exist (rows 64-127 sit on a 0.5 px grid), so
    positions built in the input's dtype lose the shift.
    """
    layer = DeformConv(1, 1, backend=backend).to(device)
    with torch.no_grad():
        layer.offset.bias[0::2] = 0.25  # dy of every tap
        layer.conv.weight.zero_()
        layer.conv.weight[0, 0, 1, 1] = 1.0
        layer.conv.bias.zero_()
    rows = torch.arange(side, dtype=torch.float32).view(side, 1).expand(side, side)
    # In a net under autocast the layer before hands over a half-precision map.
    x = torch.sin(2 * math.pi * rows / 16).view(1, 1, side, side).to(device, dtype)
    expected = torch.sin(2 * math.pi * (rows + 0.25) / 16)
    with torch.autocast(torch.device(device).type, dtype=dtype):
        y = layer(x)
    assert y.dtype == dtype
    error = y[0, 0].float().cpu() - expected
    return error[: side - 1].abs().max().item()  # the last row reads padding


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backend", CONCRETE)
def test_subpixel_offsets_survive_cpu_autocast(backend, dtype):
    assert shifted_ramp_error(backend, dtype) < 0.02  # float32 positions: 0.015


def test_checkpoint_moves_between_backends():
    torch.manual_seed(0)
    nets = {b: build_model("deformable", width_mult=0.25, deform_backend=b) for b in CONCRETE}
    source = nets["reference"].double()
    for p in offset_parameters(source):
        nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    source.eval()
    expected = source(x)
    for backend in FAST:
        net = nets[backend].double()
        net.load_state_dict(source.state_dict())
        net.eval()
        torch.testing.assert_close(net(x), expected, atol=1e-8, rtol=0, msg=backend)


def test_unknown_backend_is_rejected():
    known = "Known: auto, reference, gather, fused, triton, torchvision"
    with pytest.raises(ValueError, match=known):
        DeformConv(3, 3, backend="cuda-fast")


def test_auto_backend_follows_the_table():
    assert default_backend("cpu") == "fused"
    assert default_backend("cuda") == "triton"  # measured on an H200 (docs/performance.md)
    assert default_backend("meta") == "reference"


def test_fused_backend_refuses_other_devices():
    layer = DeformConv(3, 3, backend="fused").to("meta")
    with pytest.raises(ValueError, match="'fused' runs on the CPU only, not on meta"):
        layer(torch.zeros(1, 3, 4, 4, device="meta"))


def test_gpu_only_backend_refuses_the_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="'triton' runs on CUDA only, not on cpu"):
        DeformConv(3, 3, backend="triton")(torch.zeros(1, 3, 4, 4))


def test_auto_falls_back_to_gather_without_a_compiler(monkeypatch):
    """No C++ toolchain: `auto` says why, once, and uses `gather`; `fused` itself refuses."""
    monkeypatch.setattr(kernels, "_build", lambda: (None, "no g++ here"))
    with pytest.warns(UserWarning, match="auto uses gather on cpu, not fused: no g\\+\\+ here"):
        assert default_backend("cpu") == "gather"
    with pytest.raises(RuntimeError, match="no g\\+\\+ here. Use model.deformable.backend=gather"):
        DeformConv(3, 3, backend="fused")(torch.zeros(1, 3, 4, 4))


def test_auto_falls_back_to_reference_without_triton(monkeypatch):
    """No Triton (an install without it): `auto` on CUDA warns and uses `reference`."""
    monkeypatch.setattr(deformconv, "triton_error", lambda: "Triton cannot be imported (gone)")
    with pytest.warns(UserWarning, match="auto uses reference on cuda, not triton: .*gone"):
        assert default_backend("cuda") == "reference"


def test_fused_kernel_handles_far_and_edge_positions():
    """Taps shifted far outside read zeros (no out-of-range index); edge taps blend with zero."""
    torch.manual_seed(0)
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    ref = DeformConv(2, 3, backend="reference").double()
    fused = DeformConv(2, 3, backend="fused").double()
    for shift in (1e6, -1e6, 4.5, -0.5):
        with torch.no_grad():
            ref.offset.bias.fill_(shift)
            fused.load_state_dict(ref.state_dict())
            torch.testing.assert_close(fused(x), ref(x), atol=1e-9, rtol=0)
    with torch.no_grad():  # far outside: only the bias remains
        ref.offset.bias.fill_(1e6)
        fused.load_state_dict(ref.state_dict())
        expected = ref.conv.bias.view(1, 3, 1, 1).expand(1, 3, 5, 5)
        torch.testing.assert_close(fused(x), expected, atol=0, rtol=0)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_fused_kernel_matches_gather_in_every_offset_layout(layout):
    """The kernel reads offsets through their strides (the offset conv's channels_last output
    is used in place) and writes grad offset in the same layout. 19 channels: the backward's
    8-lane blocks and the leftover channels both run; a NaN offset reads zeros, like gather."""
    torch.manual_seed(0)
    B, C, H, W = 2, 19, 6, 7
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    offset = 3 * torch.randn(B, 18, H, W + 2, dtype=torch.float64)
    offset[0, 4, 2, 3] = math.nan
    offset = offset[..., 1:-1] if layout == "sliced" else offset[..., :W].contiguous()
    if layout == "channels_last":
        offset = offset.contiguous(memory_format=torch.channels_last)
    kernel = kernels.cpu_kernel()
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    cols = kernel.deform_im2col(x_nhwc, offset, 3, torch.float64).view(-1, C)
    clean = offset.nan_to_num(1e9)  # gather's own rule for NaN: far outside, zeros
    expected, saved = deformconv.GatherSampler.columns(x, clean, 3, torch.float64)
    torch.testing.assert_close(cols, expected, atol=1e-12, rtol=0)
    grad_cols = torch.randn(cols.shape, dtype=torch.float64)
    grad_x, grad_offset = kernel.deform_col2im(x_nhwc, offset, grad_cols, 3)
    gx, goff = deformconv.GatherSampler.backward(saved, grad_cols, (B, C, H, W, 3), True, True)
    torch.testing.assert_close(grad_x.permute(0, 3, 1, 2), gx, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_offset, goff, atol=1e-12, rtol=0)
    if layout != "sliced":  # a dense offset's gradient comes back in its layout
        assert grad_offset.stride() == offset.stride()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_fused_half_columns_are_float32_columns_rounded_once(dtype):
    """Under autocast the kernel writes the matmul's dtype itself: the same float32 blend,
    rounded once, as converting float32 columns afterwards (what `gather` does)."""
    kernel = kernels.cpu_kernel()
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 4)  # (B, H, W, C)
    offset = 3 * torch.randn(2, 18, 6, 5)
    full = kernel.deform_im2col(x, offset, 3, torch.float32)
    half = kernel.deform_im2col(x, offset, 3, dtype)
    assert half.dtype == dtype
    assert torch.equal(half, full.to(dtype))
    grad = torch.randn(full.shape).to(dtype)
    for a, b in zip(
        kernel.deform_col2im(x, offset, grad, 3),
        kernel.deform_col2im(x, offset, grad.float(), 3),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_kernel_build_error_names_the_last_line(monkeypatch):
    """A failed build is reported by its last line (the compiler's verdict), plainly."""
    import torch.utils.cpp_extension as cpp_extension

    def fail(**_):
        raise RuntimeError("ninja: build stopped\nerror: g++ not found")

    monkeypatch.setattr(cpp_extension, "load", fail)
    kernels._build.cache_clear()
    try:
        assert kernels.cpu_kernel_error().endswith(
            "could not be built: RuntimeError: error: g++ not found"
        )
    finally:
        kernels._build.cache_clear()  # the next caller builds (or loads) the real kernel
