"""DeformConv (DCNv1, Dai et al. 2017) with interchangeable backends and one state_dict.

(Over 400 lines for a reason: the backends share the tap geometry, the column matmuls and one
autograd Function; kept together, their agreement is checked in one place. The kernels
themselves live in cpu_kernel.py, csrc/ and triton_kernels.py.)

The layer owns two convolutions, exactly as in the report's appendix:

* ``offset``: a 3x3 conv (Cin -> 2*K*K) that predicts, for every output pixel, a (dy, dx) shift
  for each of the K*K kernel taps. It starts at zero (weight and bias), so an untrained
  DeformConv is a plain 3x3 conv with padding 1, as in the DCN paper.
* ``conv``: a KxK conv of stride K applied to the sampled map.

Offset layout: channel ``2*k`` is dy and ``2*k + 1`` is dx of tap ``k = ki*K + kj`` (row-major).
This is torchvision's layout, so every backend reads the same offsets.

Backends (all agree to 1e-6 in float64, forward and backward; tests/test_deformconv.py):

* ``reference``: the report's mechanism. Bilinearly sample the input at every shifted tap
  (zeros outside the image), lay the K*K samples of each pixel out as a KxK block of an
  (H*K)x(W*K) map, and convolve that map with the KxK kernel at stride K.
* ``gather``: the same arithmetic without the 9x map and without ``grid_sample``: gather the
  4 neighbours of every tap, blend them into im2col columns and do one matmul with the conv
  weight. A hand-written backward scatters the gradient back with ``embedding_bag``. Only plain
  tensor ops, so it runs unchanged on CPU and CUDA.
* ``fused``: the columns of ``gather`` built, and their gradient sent back, by a C++ CPU kernel
  (csrc/deform_conv_cpu.cpp, one pass per direction; built on first use,
  `dogbreeds.ops.cpu_kernel`).
  CPU only. `gather` and `fused` share `ColumnDeformConv` (the matmuls) and differ only in the
  sampler.
* ``triton``: the same columns built, and their gradient sent back, by two Triton kernels
  (triton_kernels.py, one pass per direction, the input read in place through its strides).
  CUDA only (or CPU tensors under Triton's interpreter, which is how the tests check it). The
  input gradient is accumulated with atomics, so it is not bit-reproducible.
* ``torchvision``: ``torchvision.ops.deform_conv2d`` with the same weights (always in float32).
* ``auto``: per forward, the backend `default_backend` names for the input's device.

Mixed precision: sampling positions and bilinear weights are always float32 (float64 for
float64 inputs). In half precision a position like 100.25 does not exist (bf16 has 8 bits of
mantissa, so rows 64-127 sit on a 0.5 px grid) and a sub-pixel offset would silently vanish.
Under autocast only the matmul / conv runs in the autocast dtype.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from dogbreeds.compat import per_sample_weights_backward
from dogbreeds.ops.cpu_kernel import cpu_kernel, cpu_kernel_error

BACKENDS = ("auto", "reference", "gather", "fused", "triton", "torchvision")
CPU_ONLY = ("fused",)  # backends with a CPU kernel only
CUDA_ONLY = ("triton",)  # backends with GPU kernels only (CPU only under Triton's interpreter)

# The backend `auto` uses per device type: the fastest in training-step benchmarks of the
# deformable net (forward, loss, backward, clipping, Adam step), in float32 and bf16, on CPU and
# on an H200 (`python -m dogbreeds bench`; the figures and machines are in docs/performance.md).
# Devices not listed fall back to `reference`.
DEFAULT_BACKENDS = {"cpu": "fused", "cuda": "triton"}
# Where a default cannot run (no C++ compiler, no Triton), this stands in, with a warning.
FALLBACKS = {"fused": "gather", "triton": "reference"}


def default_backend(device: torch.device | str) -> str:
    """The backend `auto` uses on `device` (DEFAULT_BACKENDS says where the choice comes from).

    Where the default's kernel cannot run here (`fused` without a C++ compiler, `triton`
    without Triton), its FALLBACKS entry stands in, with one warning that says why.
    """
    device = torch.device(device)
    backend = DEFAULT_BACKENDS.get(device.type, "reference")
    reason = backend_error(backend)
    if reason:
        _warn_fallback(backend, FALLBACKS[backend], device.type, reason)
        return FALLBACKS[backend]
    return backend


def backend_error(backend: str) -> str:
    """Why `backend`'s kernel cannot run in this installation, or '' where it can."""
    if backend == "fused":
        return cpu_kernel_error()
    if backend == "triton":
        return triton_error()
    return ""


@functools.cache
def triton_error() -> str:
    """Why Triton cannot be imported here ('' where it can)."""
    try:
        import triton  # noqa: F401
    except ImportError as error:
        return f"Triton cannot be imported ({error})"
    return ""


@functools.cache
def _warn_fallback(backend: str, fallback: str, device: str, reason: str) -> None:
    warnings.warn(
        f"DeformConv backend auto uses {fallback} on {device}, not {backend}: {reason}",
        stacklevel=3,
    )


def position_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of sampling positions and bilinear weights: float64 for float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the conv / matmul runs in: autocast's where autocast is on, else x's."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def tap_positions(
    offset: torch.Tensor, kernel_size: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute (row, col) sampling positions of every tap of every pixel, in `dtype`.

    offset: (B, 2*K*K, H, W). Returns py, px, each (B, K, K, H, W): pixel (h, w)'s tap
    (ki, kj) reads the input at (h + ki - pad + dy, w + kj - pad + dx).
    """
    B, _, H, W = offset.shape
    K = kernel_size
    pad = (K - 1) // 2
    dy = offset[:, 0::2].to(dtype).reshape(B, K, K, H, W)  # (B, ki, kj, H, W)
    dx = offset[:, 1::2].to(dtype).reshape(B, K, K, H, W)
    taps = torch.arange(K, device=offset.device, dtype=dtype) - pad
    rows = torch.arange(H, device=offset.device, dtype=dtype)
    cols = torch.arange(W, device=offset.device, dtype=dtype)
    py = rows.view(1, 1, 1, H, 1) + taps.view(1, K, 1, 1, 1) + dy
    px = cols.view(1, 1, 1, 1, W) + taps.view(1, 1, K, 1, 1) + dx
    return py, px


# ----------------------------------------------------------------------------- reference


def sample_taps(x: torch.Tensor, offset: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Bilinearly sample `x` at the K*K shifted taps of every pixel, as an (H*K)x(W*K) map.

    x: (B, C, H, W); offset: (B, 2*K*K, H, W) in torchvision's (dy, dx)-per-tap layout.
    Returns (B, C, H*K, W*K) where block (h, w) holds the taps of output pixel (h, w), in
    float32 (float64 for float64 inputs) whatever autocast says: see the module docstring.
    Taps outside the image read zeros (grid_sample's zero padding, like DCN and torchvision).
    """
    B, _, H, W = x.shape
    K = kernel_size
    dtype = position_dtype(x)
    py, px = tap_positions(offset, K, dtype)  # (B, K, K, H, W)
    # Lay out as (B, H, ki, W, kj) -> (B, H*K, W*K): pixel (h, w)'s taps form a KxK block.
    py = py.permute(0, 3, 1, 4, 2).reshape(B, H * K, W * K)
    px = px.permute(0, 3, 1, 4, 2).reshape(B, H * K, W * K)
    # grid_sample with align_corners=False maps pixel index i to (2i + 1) / size - 1.
    grid = torch.stack(((2 * px + 1) / W - 1, (2 * py + 1) / H - 1), dim=-1)
    with torch.autocast(x.device.type, enabled=False):
        return F.grid_sample(
            x.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )


# ----------------------------------------------------------------------------- gather


def bilinear_corners(
    py: torch.Tensor, px: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the 4 neighbours of every sampling position sit, and their bilinear weights.

    py, px: (B, H, W, K*K) positions in float32 or float64. The input is read as a table of
    rows, one per pixel of the zero-padded (H+2)x(W+2) image (channels along the row), so
    every neighbour of a position is a valid row and those in the border read zeros. The
    top-left neighbour (y0, x0) is row `base`; the others are base + 1, base + W+2 and
    base + W+2 + 1 (`corner_steps`). Returns, over N = B*H*W*K*K taps:
      base: (N,) int64 row of the top-left neighbour;
      weight: (N, 4) bilinear weights in corner order (y0,x0), (y0,x1), (y1,x0), (y1,x1);
      dweight_dy, dweight_dx: (N, 4) the weights' derivatives w.r.t. py and px.
    Neighbours outside the image get weight 0 (zero padding, like DCN and torchvision); a
    position far outside is clamped into the border so its rows stay valid.
    """
    B = py.shape[0]
    y0, x0 = py.floor(), px.floor()
    ly, lx = py - y0, px - x0  # fractional parts in [0, 1)
    hy, hx = 1 - ly, 1 - lx
    ys = torch.stack((y0, y0, y0 + 1, y0 + 1), dim=-1)  # (B, H, W, K*K, 4)
    xs = torch.stack((x0, x0 + 1, x0, x0 + 1), dim=-1)
    inside = ((ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)).to(py.dtype)
    # Padded coordinates: image row y is padded row y + 1; y0 in [-1, H-1] keeps y0+1 <= H.
    y0 = y0.long().clamp_(-1, height - 1) + 1
    x0 = x0.long().clamp_(-1, width - 1) + 1
    padded = (height + 2) * (width + 2)
    base = torch.arange(B, device=py.device).view(B, 1, 1, 1) * padded + y0 * (width + 2) + x0
    weight = torch.stack((hy * hx, hy * lx, ly * hx, ly * lx), dim=-1) * inside
    dweight_dy = torch.stack((-hx, -lx, hx, lx), dim=-1) * inside
    dweight_dx = torch.stack((-hy, hy, -ly, ly), dim=-1) * inside
    return base.reshape(-1), *(t.reshape(-1, 4) for t in (weight, dweight_dy, dweight_dx))


def corner_steps(width: int, device: torch.device) -> torch.Tensor:
    """Row steps from the top-left neighbour to all 4, in the padded (W+2)-wide table."""
    return torch.tensor([0, 1, width + 2, width + 3], device=device)


def padded_rows(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x (B, C, H, W) as a (B*(H+2)*(W+2), C) table: one row per pixel of the zero-padded image."""
    B, C, H, W = x.shape
    x = F.pad(x.to(dtype).permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (B, H+2, W+2, C)
    return x.reshape(B * (H + 2) * (W + 2), C)


def scatter_to_pixels(
    grad_cols: torch.Tensor, base: torch.Tensor, weight: torch.Tensor, num_rows: int, width: int
) -> torch.Tensor:
    """The input gradient: each tap's column gradient sent back to its 4 neighbours.

    grad_cols: (N, C); base: (N,); weight: (N, 4). Returns (num_rows, C) over the padded table.
    A scatter (index_add_) is slow on CPU, so this is a gather instead: sort the taps by their
    top-left row once, then for each corner sum the weighted gradients of the taps that share
    a row with `embedding_bag` (a fused gather-and-sum), and shift the sums by the corner's
    row step. Empty bags give zeros.
    """
    order = torch.argsort(base)  # (N,) taps grouped by top-left row
    counts = torch.bincount(base, minlength=num_rows)
    starts = counts.cumsum(0) - counts  # (num_rows,) first tap of each row in `order`
    sorted_weight = weight[order].t().contiguous()  # (4, N) in `order`
    steps = corner_steps(width, base.device).tolist()
    grad = torch.zeros(num_rows, grad_cols.shape[1], dtype=grad_cols.dtype, device=base.device)
    for corner, step in enumerate(steps):
        sums = F.embedding_bag(  # (num_rows, C): per top-left row, its taps' weighted grads
            order, grad_cols, starts, mode="sum", per_sample_weights=sorted_weight[corner]
        )
        grad[step:] += sums[: num_rows - step]
    return grad


class GatherSampler:
    """Bilinear taps with plain tensor ops (embedding_bag), for `ColumnDeformConv`."""

    @staticmethod
    def columns(x, offset, K, dtype):
        B, C, H, W = x.shape
        py, px = tap_positions(offset, K, position_dtype(x))  # (B, K, K, H, W)
        py = py.flatten(1, 2).permute(0, 2, 3, 1)  # (B, H, W, K*K): taps last, like columns
        px = px.flatten(1, 2).permute(0, 2, 3, 1)
        base, bw, dbw_dy, dbw_dx = bilinear_corners(py, px, H, W)  # (N,), (N, 4) x 3
        x_rows = padded_rows(x, position_dtype(x))  # (B*(H+2)*(W+2), C)
        corners = base[:, None] + corner_steps(W, x.device)  # (N, 4) rows of the neighbours
        # One fused gather-and-blend: cols[n] = sum_i bw[n, i] * x_rows[corners[n, i]].
        cols = F.embedding_bag(corners, x_rows, per_sample_weights=bw, mode="sum")  # (N, C)
        return cols.to(dtype), (x_rows, corners, bw, dbw_dy, dbw_dx)

    @staticmethod
    def backward(saved, grad_cols, shape, needs_x, needs_offset):
        x_rows, corners, bw, dbw_dy, dbw_dx = saved
        B, C, H, W, K = shape
        grad_cols = grad_cols.to(bw.dtype)
        grad_x = grad_offset = None
        if needs_x:
            grad_rows = scatter_to_pixels(grad_cols, corners[:, 0], bw, x_rows.shape[0], W)
            grad_x = grad_rows.view(B, H + 2, W + 2, C)[:, 1:-1, 1:-1].permute(0, 3, 1, 2)
        if needs_offset:
            # d(tap)/d(position) = sum_i x_rows[corners[n, i]] * d(bw[n, i])/d(position), dotted
            # with the tap's column gradient: first the 4 dot products per tap (fused, the
            # same op embedding_bag's own backward uses for per_sample_weights), then the sum.
            N = corners.shape[0]
            bags = torch.arange(N, device=corners.device)
            dots = per_sample_weights_backward(
                grad_cols, x_rows, corners.view(-1), bags * 4, bags.repeat_interleave(4)
            ).view(N, 4)
            grad_py = (dots * dbw_dy).sum(-1).view(B, H, W, K * K)
            grad_px = (dots * dbw_dx).sum(-1).view(B, H, W, K * K)
            # Back to torchvision's layout: channel 2k = dy, 2k + 1 = dx of tap k.
            grad_offset = torch.stack((grad_py, grad_px), dim=-1)  # (B, H, W, K*K, 2)
            grad_offset = grad_offset.view(B, H, W, 2 * K * K).permute(0, 3, 1, 2)
        return grad_x, grad_offset


class FusedSampler:
    """Bilinear taps with the C++ CPU kernel (`cpu_kernel`), for `ColumnDeformConv`."""

    @staticmethod
    def columns(x, offset, K, dtype):
        kernel = cpu_kernel()
        exact = position_dtype(x)
        x_nhwc = x.to(exact).permute(0, 2, 3, 1).contiguous()  # free for a channels_last x
        offset = offset.to(exact)  # read through its strides (channels_last from the offset conv)
        # Blended in float32, stored in the matmul's dtype (no separate conversion pass).
        cols = kernel.deform_im2col(x_nhwc, offset, K, dtype)  # (B, H, W, K*K, C)
        return cols.view(-1, x.shape[1]), (x_nhwc, offset)

    @staticmethod
    def backward(saved, grad_cols, shape, needs_x, needs_offset):
        x_nhwc, offset = saved
        K = shape[-1]
        grad_x, grad_offset = cpu_kernel().deform_col2im(x_nhwc, offset, grad_cols.contiguous(), K)
        return grad_x.permute(0, 3, 1, 2), grad_offset


class TritonSampler:
    """Bilinear taps with the Triton kernels (`triton_kernels`), for `ColumnDeformConv`."""

    @staticmethod
    def columns(x, offset, K, dtype):
        from dogbreeds.ops import triton_kernels

        cols = triton_kernels.deform_im2col(x, offset, K, dtype)  # (B*H*W*K*K, C)
        return cols, (x, offset)

    @staticmethod
    def backward(saved, grad_cols, shape, needs_x, needs_offset):
        from dogbreeds.ops import triton_kernels

        x, offset = saved
        K = shape[-1]
        return triton_kernels.deform_col2im(x, offset, grad_cols, K, needs_x, needs_offset)


SAMPLERS = {"gather": GatherSampler, "fused": FusedSampler, "triton": TritonSampler}


# Rows (B*H*W) from which the weight gradient is split across CPU threads (`weight_gradient`).
SPLIT_MIN_ROWS = 8192


def weight_gradient(g_rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The conv weight's gradient g_rows.t() @ cols: (Cout, K*K*C) from (N, Cout) and (N, K*K*C).

    On the CPU, oneDNN runs this long reduction into a small matrix on one thread (2 threads
    are no faster than 1). So where N is large the rows are split into one batch per thread,
    each thread multiplies its own (bmm parallelises over the batch), and the partial products
    are summed in float32 (faster on 2 threads: `python -m dogbreeds bench`). Returned in
    cols' dtype, or float32 when split from half-precision columns.
    The split follows torch's thread count, so the gradient's rounding (and a training's
    numbers) depend on it; the thread count is recorded with every run's metrics.
    """
    rows = g_rows.shape[0]
    parts = torch.get_num_threads() if g_rows.device.type == "cpu" else 1
    if parts < 2 or rows < SPLIT_MIN_ROWS or rows % parts:
        return g_rows.t() @ cols
    g = g_rows.view(parts, rows // parts, -1).transpose(1, 2)  # (parts, Cout, N/parts)
    partial = torch.bmm(g, cols.view(parts, rows // parts, -1))  # (parts, Cout, K*K*C)
    return partial.sum(0, dtype=torch.promote_types(cols.dtype, torch.float32))


class ColumnDeformConv(torch.autograd.Function):
    """Deformable conv as bilinear im2col columns + one matmul, with a hand-written backward.

    forward(x, offset, weight, bias, kernel_size, dtype, sampler): x (B, C, H, W), offset
    (B, 2*K*K, H, W), weight (Cout, C, K, K), bias (Cout,); `sampler` ("gather" or "fused",
    `SAMPLERS`) builds the (B*H*W*K*K, C) columns and sends their gradient back to x and
    offset. Positions, bilinear weights and the blend run in float32 (float64 for float64 x);
    the matmul runs in `dtype` (autocast's). Returns (B, Cout, H, W) in `dtype`, channels_last
    in memory (it falls out of the matmul). Call it with autocast off.
    """

    @staticmethod
    def forward(ctx, x, offset, weight, bias, kernel_size, dtype, sampler):
        B, C, H, W = x.shape
        K = kernel_size
        Cout = weight.shape[0]
        sampler = SAMPLERS[sampler]
        cols, saved = sampler.columns(x, offset, K, dtype)  # (N, C), blended in float32 / 64
        cols = cols.view(B * H * W, K * K * C)  # (B*H*W, K*K*C), columns (ki, kj, c)
        w_mat = weight.to(dtype).permute(0, 2, 3, 1).reshape(Cout, K * K * C)
        out = torch.addmm(bias.to(dtype), cols, w_mat.t())  # (B*H*W, Cout)
        ctx.save_for_backward(cols, w_mat, *saved)
        ctx.sampler = sampler
        ctx.shape = (B, C, H, W, K)
        ctx.dtypes = (x.dtype, offset.dtype, weight.dtype, bias.dtype, position_dtype(x))
        return out.view(B, H, W, Cout).permute(0, 3, 1, 2)  # (B, Cout, H, W), channels_last

    @staticmethod
    def backward(ctx, grad_out):
        cols, w_mat, *saved = ctx.saved_tensors
        B, C, H, W, K = ctx.shape
        x_dtype, offset_dtype, weight_dtype, bias_dtype, exact = ctx.dtypes
        Cout = w_mat.shape[0]
        g_rows = grad_out.permute(0, 2, 3, 1).reshape(B * H * W, Cout).to(cols.dtype)
        grad_x = grad_offset = grad_weight = grad_bias = None
        if ctx.needs_input_grad[2]:
            grad_w_mat = weight_gradient(g_rows, cols)  # (Cout, K*K*C)
            grad_weight = grad_w_mat.view(Cout, K, K, C).permute(0, 3, 1, 2).to(weight_dtype)
        if ctx.needs_input_grad[3]:
            grad_bias = g_rows.sum(0, dtype=exact).to(bias_dtype)
        needs_x, needs_offset = ctx.needs_input_grad[:2]
        if needs_x or needs_offset:
            grad_cols = (g_rows @ w_mat).view(-1, C)  # (N, C) in the matmul's dtype
            grad_x, grad_offset = ctx.sampler.backward(
                saved, grad_cols, ctx.shape, needs_x, needs_offset
            )
            grad_x = grad_x.to(x_dtype) if needs_x else None
            grad_offset = grad_offset.to(offset_dtype) if needs_offset else None
        return grad_x, grad_offset, grad_weight, grad_bias, None, None, None


def column_deform_conv(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    K: int,
    sampler: str,
) -> torch.Tensor:
    """`ColumnDeformConv` with autocast handled: matmul in the autocast dtype, positions float32."""
    dtype = compute_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return ColumnDeformConv.apply(x, offset, weight, bias, K, dtype, sampler)


# ----------------------------------------------------------------------------- torchvision


def torchvision_deform_conv(
    x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, K: int
) -> torch.Tensor:
    """torchvision's deform_conv2d, always in float32 (float64 for float64 inputs).

    Its CPU kernel has no bf16 / fp16 version and under CUDA autocast it upcasts to float32
    anyway, so we cast explicitly. The result comes back in the compute dtype.
    """
    from torchvision.ops import deform_conv2d

    dtype = position_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        out = deform_conv2d(
            x.to(dtype),
            offset.to(dtype),
            weight.to(dtype),
            bias.to(dtype),
            stride=1,
            padding=(K - 1) // 2,
        )
    return out.to(compute_dtype(x))


# ----------------------------------------------------------------------------- the layer


def runs_on(backend: str, device: torch.device) -> bool:
    """Whether `backend` has a kernel for `device` (`fused`: CPU; `triton`: CUDA)."""
    if backend in CPU_ONLY:
        return device.type == "cpu"
    if backend in CUDA_ONLY:
        return device.type == "cuda" or triton_interpreted()
    return True


def check_device(backend: str, device: torch.device) -> None:
    """Stop with a clear error where `backend` has no kernel for `device`."""
    if not runs_on(backend, device):
        where = "the CPU" if backend in CPU_ONLY else "CUDA"
        raise ValueError(
            f"DeformConv backend {backend!r} runs on {where} only, not on {device}: "
            "set model.deformable.backend to auto, reference or gather"
        )


def triton_interpreted() -> bool:
    """Whether Triton runs its CPU interpreter (TRITON_INTERPRET=1), as the tests do."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


class DeformConv(nn.Module):
    """A 3x3 deformable convolution (stride 1, padding 1) with learned per-pixel tap offsets."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, backend: str = "reference"
    ):
        super().__init__()
        if backend not in BACKENDS:
            known = ", ".join(BACKENDS)
            raise ValueError(f"Unknown DeformConv backend {backend!r}. Known: {known}")
        self.kernel_size = kernel_size
        self.backend = backend
        K = kernel_size
        self.offset = nn.Conv2d(in_channels, 2 * K * K, K, padding=(K - 1) // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, K, stride=K)
        nn.init.zeros_(self.offset.weight)  # start as a plain conv (DCN paper, sec. 2.3)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset(x)  # (B, 2*K*K, H, W)
        backend = default_backend(x.device) if self.backend == "auto" else self.backend
        K = self.kernel_size
        if backend == "reference":
            return self.conv(sample_taps(x, offset, K))  # (B, Cout, H, W)
        if backend in SAMPLERS:
            check_device(backend, x.device)
            return column_deform_conv(x, offset, self.conv.weight, self.conv.bias, K, backend)
        return torchvision_deform_conv(x, offset, self.conv.weight, self.conv.bias, K)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"
