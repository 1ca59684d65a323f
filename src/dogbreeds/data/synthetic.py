"""A generated 7-class image set, so the whole pipeline (and its tests) runs offline.

Each class is a coloured shape (hue and shape depend on the class) at a random position and
size on a random, blotchy background. The class is easy to learn from colour and shape;
the random low-frequency background gives every image its own perceptual hash, so merge's
near-duplicate detector never mistakes two generated images for one photo.
"""

from __future__ import annotations

import colorsys
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dogbreeds.params import SyntheticParams

log = logging.getLogger(__name__)

SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond", "bars")


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A muted random colour field: an 8x8 grid of greys and tints blown up smoothly.

    8x8 cells put random energy into all 64 low frequencies the perceptual hash reads, so
    hashes of two generated images differ in about 32 bits and (measured over 420 images)
    never in fewer than 16.
    """
    grey = 50 + 150 * rng.random((8, 8, 1))
    tint = 30 * rng.random((8, 8, 3))
    grid = np.clip(grey + tint, 0, 255).astype(np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)


def _class_colour(label: int, num_classes: int, rng: np.random.Generator) -> tuple[int, ...]:
    """A saturated colour whose hue identifies the class; brightness varies a little."""
    r, g, b = colorsys.hsv_to_rgb(label / num_classes, 0.9, 0.75 + 0.25 * rng.random())
    return (int(255 * r), int(255 * g), int(255 * b))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, ...], fill) -> None:
    """Draw one of SHAPES inside the bounding box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    cx, cy, w = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    if shape == "disc":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "cross":
        draw.rectangle((cx - w / 6, y0, cx + w / 6, y1), fill=fill)
        draw.rectangle((x0, cy - w / 6, x1, cy + w / 6), fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(w / 6)))
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    else:  # bars
        for k in range(3):
            top = y0 + k * w / 2.5
            draw.rectangle((x0, top, x1, top + w / 6), fill=fill)


def synthetic_image(label: int, index: int, num_classes: int, size: int, seed: int) -> Image.Image:
    """Image `index` of class `label`; its randomness depends only on (seed, label, index)."""
    rng = np.random.default_rng([seed, label, index])
    image = _background(rng, size)
    side = size * (0.35 + 0.25 * rng.random())
    x0, y0 = rng.random(2) * (size - side)
    colour = _class_colour(label, num_classes, rng)
    shape = SHAPES[label % len(SHAPES)]
    _draw_shape(ImageDraw.Draw(image), shape, (x0, y0, x0 + side, y0 + side), colour)
    return image


def write_synthetic(params: SyntheticParams, breeds: list[str], out_dir: Path) -> int:
    """Write params.per_class PNGs per breed to out_dir/<breed>/<n>.png; return the count."""
    for label, breed in enumerate(breeds):
        folder = out_dir / breed
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(params.per_class):
            image = synthetic_image(label, index, len(breeds), params.size, params.seed)
            image.save(folder / f"{index:04d}.png")
    count = params.per_class * len(breeds)
    log.info(
        "synthetic: wrote %d images, %d per breed, %d px", count, params.per_class, params.size
    )
    return count
