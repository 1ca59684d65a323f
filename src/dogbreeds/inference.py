"""A trained net as a classifier of image files: bytes in, one probability per breed out.

Training never sees a file: the deform stage decodes each image (`images.decode_rgb`), stretches
it to `resolution` x `resolution` with bicubic resampling and stores uint8 pixels; training then
divides by 255 and normalises with the training split's channel `mean` and `std`. A photo given
to the trained net must go through exactly those steps, so they are read from the checkpoint's
metadata, never retyped here.

`Classifier` is plain torch and Pillow. The MLflow model (`dogbreeds.pyfunc`) and the predict
command (`dogbreeds.predict`) both wrap it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from dogbreeds import DogbreedsError
from dogbreeds.images import decode_rgb
from dogbreeds.models import build_model

log = logging.getLogger(__name__)

# What a checkpoint must hold besides the weights (written by the train stage's save_checkpoint).
CHECKPOINT_KEYS = ("state_dict", "arch", "width_mult", "deform_backend", "breeds", "mean", "std")


class CheckpointError(DogbreedsError):
    """A checkpoint that is missing, unreadable or lacks the metadata inference needs."""


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's dict (weights and metadata) on the CPU, checked for the needed keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint (run the train stage: dvc repro)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise CheckpointError(f"{path}: not a dogbreeds checkpoint ({exc})") from None
    missing = [key for key in CHECKPOINT_KEYS if key not in blob]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return blob


@dataclass
class Classifier:
    """A net in eval mode with the preprocessing it was trained with."""

    model: nn.Module
    breeds: list[str]
    resolution: int
    mean: list[float]
    std: list[float]

    @classmethod
    def from_checkpoint(cls, path: Path) -> Classifier:
        """Rebuild the net named in a checkpoint and load its weights (CPU)."""
        blob = read_checkpoint(path)
        model = build_model(
            blob["arch"],
            num_classes=len(blob["breeds"]),
            width_mult=blob["width_mult"],
            deform_backend=blob["deform_backend"],
        )
        model.load_state_dict(blob["state_dict"])
        # Older checkpoints may lack `resolution`; the first layer does not fix it, so insist.
        if "resolution" not in blob:
            raise CheckpointError(f"{path}: checkpoint lacks resolution")
        return cls(
            model.eval(), list(blob["breeds"]), int(blob["resolution"]), blob["mean"], blob["std"]
        )

    def pixels(self, data: bytes) -> torch.Tensor:
        """Encoded image bytes -> uint8 (3, R, R), resized as the deform stage does.

        Raises images.UnreadableImage for bytes that Pillow cannot decode.
        """
        side = self.resolution
        image = decode_rgb(data, draft_size=(side, side))
        image = image.resize((side, side), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, R, R) -> float inputs (x / 255 - mean) / std, as in training."""
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (pixels.float() / 255 - mean) / std

    @torch.no_grad()
    def probabilities(self, images: list[bytes]) -> torch.Tensor:
        """Encoded images -> (N, len(breeds)) probabilities; each row sums to 1."""
        if not images:
            return torch.zeros(0, len(self.breeds))
        batch = torch.stack([self.pixels(data) for data in images])
        return self.model(self.normalise(batch)).exp()  # the net ends in LogSoftmax

    def top(self, data: bytes, k: int = 3) -> list[tuple[str, float]]:
        """The k most likely breeds of one image, most likely first."""
        probs = self.probabilities([data])[0]
        values, indices = probs.topk(min(k, len(self.breeds)))
        return [(self.breeds[i], float(v)) for v, i in zip(values, indices, strict=True)]
