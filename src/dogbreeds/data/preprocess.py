"""The one image preprocessing: file bytes -> uint8 pixels -> the net's float input.

Training and serving must see a photo the same way, so both call these functions: the deform
stage stores `square_pixels` of every image (decoded upright RGB, stretched to side x side
with bicubic resampling, whole frame kept), training and evaluation feed the net
`Normalize(mean, std)(to_unit(pixels))`, and the served classifier
(`dogbreeds.serving.classifier`) calls the same two on the photo it is given, with the mean and
std that training measured (`channel_stats`) read from the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dogbreeds.data.images import decode_rgb


def square_image(data: bytes, side: int) -> Image.Image:
    """Encoded image bytes -> upright RGB, side x side (aspect not preserved).

    Stretching rather than centre-cropping keeps the whole dog in view. The JPEG draft mode
    decodes big photos at 1/2-1/8 scale first (never below `side`). Raises
    images.UnreadableImage for bytes that Pillow cannot decode.
    """
    image = decode_rgb(data, draft_size=(side, side))
    return image.resize((side, side), Image.Resampling.BICUBIC)


def square_pixels(data: bytes, side: int) -> torch.Tensor:
    """Encoded image bytes -> uint8 (3, side, side): what the prepared splits store."""
    image = square_image(data, side)
    return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())


def load_square_pixels(path: str | Path, side: int) -> torch.Tensor:
    """`square_pixels` of an image file."""
    return square_pixels(Path(path).read_bytes(), side)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, R, R) -> float32 in [0, 1]."""
    return images.float() / 255


class Normalize:
    """uint8 images -> float inputs (x / 255 - mean) / std, with mean/std kept on the device."""

    def __init__(
        self, mean: list[float], std: list[float], device: torch.device | str = "cpu"
    ) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def input_stats(images: torch.Tensor, normalize: bool) -> tuple[list[float], list[float]]:
    """The mean and std `Normalize` uses: the split's `channel_stats`, or 0 and 1 (inputs left
    in [0, 1]) when `train.normalize` is off. Either way they travel in the checkpoint."""
    if not normalize:
        return [0.0] * 3, [1.0] * 3
    return channel_stats(images)


def channel_stats(images: torch.Tensor, chunk: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (of pixel values in [0, 1]) over a uint8 split.

    Summed in float64 chunks, so a 224-pixel split never needs a float copy of itself.
    """
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64) / 255
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()
