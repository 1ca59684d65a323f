"""DeformConv (DCNv1, Dai et al. 2017) with two interchangeable backends.

The layer owns two convolutions, exactly as in the report's appendix:

* ``offset``: a 3x3 conv (Cin -> 2*K*K) that predicts, for every output pixel, a (dy, dx) shift
  for each of the K*K kernel taps. It starts at zero (weight and bias), so an untrained
  DeformConv is a plain 3x3 conv with padding 1, as in the DCN paper.
* ``conv``: a KxK conv of stride K applied to the sampled map.

Offset layout: channel ``2*k`` is dy and ``2*k + 1`` is dx of tap ``k = ki*K + kj`` (row-major).
This is torchvision's layout, so both backends read the same offsets and share one state_dict.

Backends:

* ``reference``: the report's mechanism. Bilinearly sample the input at every shifted tap
  (zeros outside the image), lay the K*K samples of each pixel out as a KxK block of an
  (H*K)x(W*K) map, and convolve that map with the KxK kernel at stride K.
* ``torchvision``: ``torchvision.ops.deform_conv2d`` with the same weights.
* ``auto``: per forward, the faster of the two for the input's device (`default_backend`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("auto", "reference", "torchvision")


def default_backend(device: torch.device | str) -> str:
    """The faster correct backend on `device` (measured: see README, 'DeformConv backends').

    On CPU the reference (grid_sample + strided conv) path is faster than torchvision's
    im2col kernel; on CUDA torchvision's fused kernel wins and needs 9x less memory.
    """
    return "torchvision" if torch.device(device).type == "cuda" else "reference"


def sample_taps(x: torch.Tensor, offset: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Bilinearly sample `x` at the K*K shifted taps of every pixel, as an (H*K)x(W*K) map.

    x: (B, C, H, W); offset: (B, 2*K*K, H, W) in torchvision's (dy, dx)-per-tap layout.
    Returns (B, C, H*K, W*K) where block (h, w) holds the taps of output pixel (h, w).
    Taps outside the image read zeros (grid_sample's zero padding, like DCN and torchvision).
    """
    B, _, H, W = x.shape
    K = kernel_size
    pad = (K - 1) // 2
    dy = offset[:, 0::2].reshape(B, K, K, H, W)  # (B, ki, kj, H, W)
    dx = offset[:, 1::2].reshape(B, K, K, H, W)
    taps = torch.arange(K, device=x.device, dtype=x.dtype) - pad
    rows = torch.arange(H, device=x.device, dtype=x.dtype)
    cols = torch.arange(W, device=x.device, dtype=x.dtype)
    # Absolute sampling positions in pixels, (B, K, K, H, W).
    py = rows.view(1, 1, 1, H, 1) + taps.view(1, K, 1, 1, 1) + dy
    px = cols.view(1, 1, 1, 1, W) + taps.view(1, 1, K, 1, 1) + dx
    # Lay out as (B, H, ki, W, kj) -> (B, H*K, W*K): pixel (h, w)'s taps form a KxK block.
    py = py.permute(0, 3, 1, 4, 2).reshape(B, H * K, W * K)
    px = px.permute(0, 3, 1, 4, 2).reshape(B, H * K, W * K)
    # grid_sample with align_corners=False maps pixel index i to (2i + 1) / size - 1.
    grid = torch.stack(((2 * px + 1) / W - 1, (2 * py + 1) / H - 1), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


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
        if backend == "reference":
            return self.conv(sample_taps(x, offset, self.kernel_size))  # (B, Cout, H, W)
        from torchvision.ops import deform_conv2d

        pad = (self.kernel_size - 1) // 2
        # Under autocast the offset conv may run in half precision; deform_conv2d wants one dtype.
        offset = offset.to(x.dtype)
        weight, bias = self.conv.weight.to(x.dtype), self.conv.bias.to(x.dtype)
        return deform_conv2d(x, offset, weight, bias, stride=1, padding=pad)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"
