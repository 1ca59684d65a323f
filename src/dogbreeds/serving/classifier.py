"""A trained net as a classifier of image files: bytes in, one probability per breed out.

Training never sees a file: the deform stage turns each image into uint8 pixels and training
normalises them with the training split's channel `mean` and `std`. A photo given to the
trained net goes through the same functions (`dogbreeds.data.preprocess`), with the resolution,
mean and std read from the checkpoint's metadata, never retyped here.

`Classifier` is plain torch and Pillow. The MLflow model (`dogbreeds.serving.pyfunc`) and the
predict command (`dogbreeds.commands.predict`) both wrap it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dogbreeds.data.preprocess import Normalize, square_pixels, to_unit
from dogbreeds.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


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
        model, meta = load_checkpoint(Path(path), torch.device("cpu"))
        return cls(model, list(meta["breeds"]), int(meta["resolution"]), meta["mean"], meta["std"])

    def pixels(self, data: bytes) -> torch.Tensor:
        """Encoded image bytes -> uint8 (3, R, R), exactly as the deform stage stores them.

        Raises images.UnreadableImage for bytes that Pillow cannot decode.
        """
        return square_pixels(data, self.resolution)

    def inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, R, R) -> the net's float input, exactly as training and evaluation
        build it (`preprocess.Normalize` of `preprocess.to_unit`)."""
        return Normalize(self.mean, self.std)(to_unit(pixels))

    @torch.no_grad()
    def probabilities(self, images: list[bytes]) -> torch.Tensor:
        """Encoded images -> (N, len(breeds)) probabilities; each row sums to 1."""
        if not images:
            return torch.zeros(0, len(self.breeds))
        batch = torch.stack([self.pixels(data) for data in images])
        return self.model(self.inputs(batch)).exp()  # the net ends in LogSoftmax

    def top(self, data: bytes, k: int = 3) -> list[tuple[str, float]]:
        """The k most likely breeds of one image, most likely first."""
        probs = self.probabilities([data])[0]
        values, indices = probs.topk(min(k, len(self.breeds)))
        return [(self.breeds[i], float(v)) for v, i in zip(values, indices, strict=True)]
