"""DeformConv's bilinear im2col and its backward as Triton kernels, for CUDA.

The `triton` backend of deformconv.py: the same columns as `gather` and `fused` (one row per
output pixel, laid out (tap, channel)), built in one pass over the input, and their gradient
sent back in one pass. Everything that made `gather` and `reference` slow on the GPU is gone:
no (N, 4) index and weight tensors, no 9x float32 sampled map, no separate casts. Positions
and bilinear weights are computed in registers in float32 (float64 for float64 inputs) and the
columns are stored in the matmul's dtype (bf16 / fp16 under autocast), blended before one
rounding, exactly like the C++ CPU kernel.

Layouts: x is read through its strides as (B, H, W, C), so a channels_last tensor (what the
nets use on CUDA) is read in place with its channels contiguous, and so are the 4 neighbours
of a tap. Offsets are read through their strides too (the offset conv's output is
channels_last). The input gradient is accumulated with atomic adds in float32 (float64), so it
is not bit-reproducible on the GPU; the offset gradient is a per-tap reduction over channels,
written once.

Runs where Triton runs: CUDA tensors, or CPU tensors under Triton's interpreter
(TRITON_INTERPRET=1, set before Triton is imported), which is how the CPU-only test suite
checks these kernels against the other backends.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Launch shape: the fastest of a sweep over tiles (2048-8192) and warps (4, 8) in bf16 training
# steps of the deformable net at 224 px, batch 128, on an H200 (docs/performance.md; rerun with
# `python -m dogbreeds bench --device cuda`). The taps are a loop: unrolled, they ran slower and
# compiled slower.
TILE = 4096  # pixels x channels per program: 128 pixels at 32 channels, 32 at 128
WARPS = 4  # warps per program


@triton.jit
def _program_pixels(B, H, W, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's BLOCK_P pixels p = (b, h, w) and BLOCK_C channels, with their masks."""
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    w = p % W
    h = (p // W) % H
    b = p // (W * H)
    c = tl.arange(0, BLOCK_C)
    return p, p < B * H * W, b, h, w, c, c[None, :] < C


@triton.jit
def _tap_corners(
    off_ptr, b, h, w, pmask, k, H, W, sob, soc, soh, sow, K: tl.constexpr, ACC: tl.constexpr
):
    """The 4 neighbours of tap k of pixels (b, h, w): rows, columns, validity and weights."""
    pad = (K - 1) // 2
    off = off_ptr + b * sob + h * soh + w * sow
    dy = tl.load(off + (2 * k) * soc, mask=pmask, other=0.0).to(ACC)
    dx = tl.load(off + (2 * k + 1) * soc, mask=pmask, other=0.0).to(ACC)
    py = h.to(ACC) + (k // K - pad) + dy
    px = w.to(ACC) + (k % K - pad) + dx
    # A position far outside reads only zeros; clamping keeps its corners outside and the
    # integer conversion in range (any position <= -2 or >= size+1 has no neighbour inside).
    py = tl.minimum(tl.maximum(py, -2.0), H + 1.0)
    px = tl.minimum(tl.maximum(px, -2.0), W + 1.0)
    y0f = tl.floor(py)
    x0f = tl.floor(px)
    ly = py - y0f  # fractional parts in [0, 1)
    lx = px - x0f
    y0 = y0f.to(tl.int64)
    x0 = x0f.to(tl.int64)
    y1 = y0 + 1
    x1 = x0 + 1
    iy0 = (y0 >= 0) & (y0 < H)
    iy1 = (y1 >= 0) & (y1 < H)
    ix0 = (x0 >= 0) & (x0 < W)
    ix1 = (x1 >= 0) & (x1 < W)
    return y0, x0, y1, x1, iy0, iy1, ix0, ix1, ly, lx


@triton.jit
def _corner_sample(xb, y, x, inside, c, cmask, sxh, sxw, sxc, ACC: tl.constexpr):
    """x at one neighbour of every pixel's tap, (BLOCK_P, BLOCK_C) in ACC; zeros outside."""
    return tl.load((xb + y * sxh + x * sxw)[:, None] + c[None, :] * sxc,
                   mask=inside[:, None] & cmask, other=0.0).to(ACC)  # fmt: skip


@triton.jit
def _im2col_tap(
    xb, off_ptr, row, b, h, w, pmask, c, cmask, k, H, W, C,
    sxh, sxw, sxc, sob, soc, soh, sow, K: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    y0, x0, y1, x1, iy0, iy1, ix0, ix1, ly, lx = _tap_corners(
        off_ptr, b, h, w, pmask, k, H, W, sob, soc, soh, sow, K, ACC
    )
    hy = 1 - ly
    hx = 1 - lx
    val = (hy * hx)[:, None] * _corner_sample(xb, y0, x0, pmask & iy0 & ix0, c, cmask, sxh, sxw,
                                              sxc, ACC)  # fmt: skip
    val += (hy * lx)[:, None] * _corner_sample(xb, y0, x1, pmask & iy0 & ix1, c, cmask, sxh, sxw,
                                               sxc, ACC)  # fmt: skip
    val += (ly * hx)[:, None] * _corner_sample(xb, y1, x0, pmask & iy1 & ix0, c, cmask, sxh, sxw,
                                               sxc, ACC)  # fmt: skip
    val += (ly * lx)[:, None] * _corner_sample(xb, y1, x1, pmask & iy1 & ix1, c, cmask, sxh, sxw,
                                               sxc, ACC)  # fmt: skip
    tl.store(row + k * C, val.to(row.dtype.element_ty), mask=pmask[:, None] & cmask)


@triton.jit
def _deform_im2col(
    x_ptr, off_ptr, cols_ptr,
    B, H, W, C,
    sxb, sxh, sxw, sxc,
    sob, soc, soh, sow,
    K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """cols[p, k, c] = bilinear sample of x[b, :, :, c] at tap k of pixel p = (b, h, w)."""
    p, pmask, b, h, w, c, cmask = _program_pixels(B, H, W, C, BLOCK_P, BLOCK_C)
    xb = x_ptr + b * sxb
    row = cols_ptr + p[:, None] * (K * K * C) + c[None, :]
    for k in range(K * K):
        _im2col_tap(xb, off_ptr, row, b, h, w, pmask, c, cmask, k, H, W, C,
                    sxh, sxw, sxc, sob, soc, soh, sow, K, ACC)  # fmt: skip


@triton.jit
def _corner_backward(
    x_ptr, gx_ptr, g, y, x, inside, weight, c, cmask, sxh, sxw, sxc, C, W,
    NEED_X: tl.constexpr, NEED_OFFSET: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """One neighbour: add weight * g to its input gradient; return sum_c g * x (the offset's)."""
    m = inside[:, None] & cmask
    if NEED_X:
        # grad x is a contiguous (B, H, W, C) buffer; its batch offset is already in gx_ptr.
        ptrs = (gx_ptr + (y * W + x) * C)[:, None] + c[None, :]
        tl.atomic_add(ptrs, weight[:, None] * g, mask=m, sem="relaxed")
    dot = tl.zeros_like(weight)
    if NEED_OFFSET:
        v = tl.load((x_ptr + y * sxh + x * sxw)[:, None] + c[None, :] * sxc, mask=m,
                    other=0.0).to(ACC)  # fmt: skip
        dot = tl.sum(g * v, axis=1)
    return dot


@triton.jit
def _col2im_tap(
    xb, gxb, goff, off_ptr, row, b, h, w, pmask, c, cmask, k, H, W, C,
    sxh, sxw, sxc, sob, soc, soh, sow,
    K: tl.constexpr, ACC: tl.constexpr, NEED_X: tl.constexpr, NEED_OFFSET: tl.constexpr,
):  # fmt: skip
    y0, x0, y1, x1, iy0, iy1, ix0, ix1, ly, lx = _tap_corners(
        off_ptr, b, h, w, pmask, k, H, W, sob, soc, soh, sow, K, ACC
    )
    hy = 1 - ly
    hx = 1 - lx
    g = tl.load(row + k * C, mask=pmask[:, None] & cmask, other=0.0).to(ACC)
    d00 = _corner_backward(xb, gxb, g, y0, x0, pmask & iy0 & ix0, hy * hx, c, cmask,
                           sxh, sxw, sxc, C, W, NEED_X, NEED_OFFSET, ACC)  # fmt: skip
    d01 = _corner_backward(xb, gxb, g, y0, x1, pmask & iy0 & ix1, hy * lx, c, cmask,
                           sxh, sxw, sxc, C, W, NEED_X, NEED_OFFSET, ACC)  # fmt: skip
    d10 = _corner_backward(xb, gxb, g, y1, x0, pmask & iy1 & ix0, ly * hx, c, cmask,
                           sxh, sxw, sxc, C, W, NEED_X, NEED_OFFSET, ACC)  # fmt: skip
    d11 = _corner_backward(xb, gxb, g, y1, x1, pmask & iy1 & ix1, ly * lx, c, cmask,
                           sxh, sxw, sxc, C, W, NEED_X, NEED_OFFSET, ACC)  # fmt: skip
    if NEED_OFFSET:
        # d(weights)/dy = (-hx, -lx, hx, lx), d(weights)/dx = (-hy, hy, -ly, ly), corner
        # order (y0,x0), (y0,x1), (y1,x0), (y1,x1); corners outside contributed dot = 0.
        gy = hx * (d10 - d00) + lx * (d11 - d01)
        gx = hy * (d01 - d00) + ly * (d11 - d10)
        tl.store(goff + (2 * k) * soc, gy.to(goff.dtype.element_ty), mask=pmask)
        tl.store(goff + (2 * k + 1) * soc, gx.to(goff.dtype.element_ty), mask=pmask)


@triton.jit
def _deform_col2im(
    x_ptr, off_ptr, gcols_ptr, gx_ptr, goff_ptr,
    B, H, W, C,
    sxb, sxh, sxw, sxc,
    sob, soc, soh, sow,
    K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
    NEED_X: tl.constexpr, NEED_OFFSET: tl.constexpr,
):  # fmt: skip
    """Send the column gradient back: atomically to x's 4 neighbours, and to each offset."""
    p, pmask, b, h, w, c, cmask = _program_pixels(B, H, W, C, BLOCK_P, BLOCK_C)
    xb = x_ptr + b * sxb
    gxb = gx_ptr + b * (H * W * C)
    # The offset gradient has the offsets' (B, 2*K*K, H, W) shape and, here, their strides.
    goff = goff_ptr + b * sob + h * soh + w * sow
    row = gcols_ptr + p[:, None] * (K * K * C) + c[None, :]
    for k in range(K * K):
        _col2im_tap(xb, gxb, goff, off_ptr, row, b, h, w, pmask, c, cmask, k, H, W, C,
                    sxh, sxw, sxc, sob, soc, soh, sow, K, ACC, NEED_X, NEED_OFFSET)  # fmt: skip


def _acc(x: torch.Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _launch_shape(x: torch.Tensor) -> tuple[int, int, tuple[int]]:
    B, C, H, W = x.shape
    block_c = triton.next_power_of_2(C)
    block_p = max(16, TILE // block_c)
    return block_p, block_c, (triton.cdiv(B * H * W, block_p),)


def _nhwc_strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    """Strides of a (B, C, H, W) tensor in (B, H, W, C) order."""
    sb, sc, sh, sw = t.stride()
    return sb, sh, sw, sc


def deform_im2col(
    x: torch.Tensor, offset: torch.Tensor, kernel_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Columns (B*H*W*K*K, C) in `dtype`: x (B, C, H, W) sampled at every tap of every pixel.

    offset: (B, 2*K*K, H, W), torchvision's layout. Any strides for both.
    """
    B, C, H, W = x.shape
    K = kernel_size
    cols = torch.empty(B * H * W * K * K, C, device=x.device, dtype=dtype)
    block_p, block_c, grid = _launch_shape(x)
    _deform_im2col[grid](
        x, offset, cols, B, H, W, C, *_nhwc_strides(x), *offset.stride(),
        K=K, BLOCK_P=block_p, BLOCK_C=block_c, ACC=_acc(x), num_warps=WARPS,
    )  # fmt: skip
    return cols


def deform_col2im(
    x: torch.Tensor,
    offset: torch.Tensor,
    grad_cols: torch.Tensor,
    kernel_size: int,
    needs_x: bool = True,
    needs_offset: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of x and offset from the columns' gradient grad_cols (B*H*W*K*K, C).

    grad x comes back as (B, C, H, W) in float32 (float64), channels_last in memory; grad
    offset in float32 (float64) with the offset's shape and strides.
    """
    B, C, H, W = x.shape
    K = kernel_size
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad_x = torch.zeros(B, H, W, C, device=x.device, dtype=acc_dtype) if needs_x else None
    # The kernel writes grad offset through the offsets' strides, so both need the same dense
    # layout: empty_like keeps a dense tensor's strides; a sliced or expanded offset is copied.
    grad_offset = torch.empty_like(offset, dtype=acc_dtype)
    if grad_offset.stride() != offset.stride():
        offset = offset.contiguous()
        grad_offset = torch.empty_like(offset, dtype=acc_dtype)
    block_p, block_c, grid = _launch_shape(x)
    _deform_col2im[grid](  # a gradient not asked for gets a pointer the kernel never touches
        x, offset, grad_cols.contiguous(),
        grad_x if needs_x else grad_cols, grad_offset,
        B, H, W, C, *_nhwc_strides(x), *offset.stride(),
        K=K, BLOCK_P=block_p, BLOCK_C=block_c, ACC=_acc(x),
        NEED_X=needs_x, NEED_OFFSET=needs_offset, num_warps=WARPS,
    )  # fmt: skip
    return (grad_x.permute(0, 3, 1, 2) if needs_x else None), (
        grad_offset if needs_offset else None
    )
