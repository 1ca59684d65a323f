"""Decode one image file into upright RGB pixels, the same way in every stage.

Merge and deform both call `load_rgb`, so the pixels that were checked for duplicates are
exactly the pixels that get resized into tensors. Files are identified by their content,
never by their extension (a `.jpg` may be a PNG or a WebP), and anything Pillow cannot
decode becomes an `UnreadableImage` with a short, path-free reason. `parallel_map` spreads
such per-image work over all cores.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm
from tqdm.contrib.concurrent import process_map

from dogbreeds import DogbreedsError

# Modes that carry transparency: flattened onto white so transparent areas do not turn black.
_ALPHA_MODES = ("RGBA", "LA", "PA", "P")

T = TypeVar("T")
R = TypeVar("R")


class UnreadableImage(DogbreedsError):
    """Pillow could not decode a file; the message is a short reason without the path."""


def _describe(exc: Exception) -> str:
    """A short, deterministic reason (Pillow's own messages can embed paths or object ids)."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can decode"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too many pixels (decompression bomb guard: over {Image.MAX_IMAGE_PIXELS})"
    return f"{type(exc).__name__}: {exc}"


def _float_to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Float greyscale (mode "F", e.g. a scientific TIFF) into 0..255, or why it cannot be.

    Pillow's own conversion clips at 0..255, so the usual [0, 1] floats come out all black.
    Floats in [0, 1] are scaled by 255, floats in [0, 255] kept; any other range has no scale
    that can be trusted, so the image is rejected rather than guessed at.
    """
    if not np.isfinite(pixels).all():
        raise UnreadableImage("float pixels that are not finite (NaN or infinity)")
    low, high = float(pixels.min(initial=0)), float(pixels.max(initial=0))
    if low >= 0 and high <= 1:
        return pixels * 255
    if low >= 0 and high <= 255:
        return pixels
    raise UnreadableImage(
        f"float pixels from {low:g} to {high:g}: neither [0, 1] nor [0, 255], no known scale"
    )


def _int_to_8bit(pixels: np.ndarray, sixteen: bool) -> np.ndarray:
    """Integer greyscale (modes "I;16*" and the 32-bit "I") into 0..255, or why it cannot be.

    Pillow's own conversion clips at 255, which turns 16-bit data nearly all white. "I" holds
    8-bit data from some decoders and 16-bit data from others, told apart by the largest value;
    beyond 16 bits, or below 0, there is no scale that can be trusted.
    """
    pixels = pixels.astype(np.int64)
    low, high = int(pixels.min(initial=0)), int(pixels.max(initial=0))
    if low < 0:
        raise UnreadableImage(f"negative integer pixels (down to {low}): no known scale")
    if high > 0xFFFF:
        raise UnreadableImage(f"32-bit integer pixels up to {high}: beyond 16 bits, no known scale")
    return pixels >> 8 if sixteen or high > 255 else pixels


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float greyscale image as 8-bit "L" (see the two above)."""
    pixels = np.asarray(image)
    if image.mode == "F":
        pixels = _float_to_8bit(pixels.astype(np.float64))
    else:
        pixels = _int_to_8bit(pixels, image.mode.startswith("I;16"))
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "L")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB, compositing transparent images onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit(image)
    if image.mode in _ALPHA_MODES:
        with warnings.catch_warnings():  # "palette with transparency" is expected here
            warnings.simplefilter("ignore")
            rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_rgb(data: bytes, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode image bytes into an upright RGB image.

    `draft_size` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while keeping at least
    that size: several times faster for big photos that are about to be shrunk anyway.

    Pillow only warns between MAX_IMAGE_PIXELS and twice that, and then decodes the whole
    image; here the warning is an error, so no file can make a stage allocate gigabytes.
    """
    if not data:
        raise UnreadableImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if draft_size is not None:
                image.draft("RGB", draft_size)
            image.load()  # decode now, so truncation is caught here rather than later
        return _to_rgb(ImageOps.exif_transpose(image))
    except UnreadableImage:
        raise
    except Exception as exc:  # untrusted files: a decoder may raise nearly anything
        raise UnreadableImage(_describe(exc)) from exc


def load_rgb(path: str | Path, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Read and decode one image file (see `decode_rgb`)."""
    return decode_rgb(Path(path).read_bytes(), draft_size)


_initialized: set[int] = set()  # ids of the initializers already run in this process


def _call_initialized(func: Callable[[T], R], initializer: Callable[[], None] | None, item: T) -> R:
    """Run `initializer` once per worker process, then `func(item)`."""
    if initializer is not None and id(initializer) not in _initialized:
        initializer()
        _initialized.add(id(initializer))
    return func(item)


def parallel_map(
    func: Callable[[T], R],
    items: Sequence[T],
    desc: str,
    workers: int | None = None,
    initializer: Callable[[], None] | None = None,
) -> list[R]:
    """`[func(item) for item in items]` across all cores, in order, with a progress bar.

    Decoding is CPU-bound, so a process pool (tqdm's `process_map`) scales with the cores.
    With one worker (or one item) it runs in this process, which keeps small jobs and tests
    free of start-up cost; `initializer` runs once in each pool worker only (e.g. to keep
    torch to one thread there).
    """
    workers = max(1, min(workers or os.cpu_count() or 1, len(items)))
    if workers == 1:
        return [func(item) for item in tqdm(items, desc=desc, unit="img")]
    chunksize = max(1, min(16, len(items) // (workers * 8)))
    work = partial(_call_initialized, func, initializer)
    return process_map(work, items, max_workers=workers, chunksize=chunksize, desc=desc, unit="img")
