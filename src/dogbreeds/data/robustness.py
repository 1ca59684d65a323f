"""Robustness sets: the clean test images deformed at several strengths, one kind at a time.

The paper's second question (does the deformable net resist deformation better?) is poorly
answered by one deformed test set: a curve of accuracy against deformation strength says more.
Strength s scales every magnitude of the study's `deform` params: rotation, translation, shear
and the scale range's distance from 1, the perspective distortion and the elastic alpha (the
displacements are linear in alpha; sigma, their smoothness, stays). Strength 0 is the clean test
set and strength 1 with kind `all` is the study's own deformed test set, image for image.

Kinds: `affine`, `perspective` and `elastic` apply that deformation alone, to every image
(probability 1), so each curve measures one kind; `all` applies the study's pipeline with its
probabilities. Each image is seeded by (`deform.seed`, image id), as in the deform stage.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from dogbreeds import DogbreedsError
from dogbreeds.common.fs import atomic_path
from dogbreeds.data.deformations import build_deformation, deform_image, image_seed, one_thread
from dogbreeds.data.images import parallel_map
from dogbreeds.data.prepared import Split, load_split, robustness_file, save_split
from dogbreeds.params import ROBUSTNESS_KINDS, DeformParams

log = logging.getLogger(__name__)

KINDS = ROBUSTNESS_KINDS
MAX_DISTORTION = 1.0  # torchvision's RandomPerspective refuses a distortion_scale above 1


class RobustnessError(DogbreedsError):
    """Bad robustness params; the message names the key."""


def scaled(params: DeformParams, strength: float, kind: str) -> DeformParams:
    """The deform params at `strength` x the study's magnitudes, for one kind (or `all`)."""
    if kind not in KINDS:
        raise RobustnessError(f"params: 'robustness.kinds' has {kind!r}; valid: {', '.join(KINDS)}")
    if strength < 0:
        raise RobustnessError(f"params: 'robustness.strengths' must be >= 0, got {strength}")
    a, p, e = params.affine, params.perspective, params.elastic
    low, high = a["scale"]
    affine = {
        "degrees": a["degrees"] * strength,
        "translate": min(a["translate"] * strength, 1.0),
        "scale": [1 - (1 - low) * strength, 1 + (high - 1) * strength],
        "shear": a["shear"] * strength,
    }
    perspective = {"distortion": min(p["distortion"] * strength, MAX_DISTORTION), "p": p["p"]}
    elastic = {"alpha": e["alpha"] * strength, "sigma": e["sigma"], "p": e["p"]}
    if kind != "all":  # one kind alone, on every image; the others off
        identity = {"degrees": 0.0, "translate": 0.0, "scale": [1.0, 1.0], "shear": 0.0}
        affine = affine if kind == "affine" else identity
        perspective = {**perspective, "p": 1.0 if kind == "perspective" else 0.0}
        elastic = {**elastic, "p": 1.0 if kind == "elastic" else 0.0}
    return replace(params, affine=affine, perspective=perspective, elastic=elastic)


def deform_split(clean: Split, params: DeformParams, strength: float, kind: str) -> Split:
    """The clean split deformed at `strength` for `kind`; strength 0 returns it unchanged."""
    if strength == 0:
        return clean
    resolution = clean.images.shape[-1]
    transform = build_deformation(scaled(params, strength, kind), resolution)
    images = torch.stack(
        [
            deform_image(image, transform, image_seed(params.seed, image_id))
            for image, image_id in zip(clean.images, clean.ids, strict=True)
        ]
    )
    return Split(images.contiguous(), clean.labels, clean.ids, clean.breeds)


def _deformed_images(clean: Split, params: DeformParams, job: tuple[str, float]) -> torch.Tensor:
    """One (kind, strength) set's images: a pool job (a Split's lists would travel back too)."""
    kind, strength = job
    return deform_split(clean, params, strength, kind).images


def make_robustness_sets(
    params: DeformParams,
    kinds: list[str],
    strengths: list[float],
    prepared: Path = Path("data/prepared"),
    out: Path = Path("data/robustness"),
    workers: int | None = None,
) -> None:
    """Write `out/<kind>-<strength>.pt` (prepared-split files) from `prepared/test_clean.pt`.

    The sets are built in parallel, one per pool job on all cores (`workers`); every image is
    seeded by its own id, so the files do not depend on the number of workers.
    """
    clean = load_split(prepared / "test_clean.pt")
    jobs = [(kind, strength) for kind in kinds for strength in strengths]
    work = partial(_deformed_images, clean, params)
    sets = parallel_map(work, jobs, "robustness sets", workers, initializer=one_thread)
    with atomic_path(out) as folder:
        folder.mkdir()
        for (kind, strength), images in zip(jobs, sets, strict=True):
            log.info("robustness set %s at strength %g", kind, strength)
            split = Split(images, clean.labels, clean.ids, clean.breeds)
            save_split(folder / robustness_file(kind, strength), split)
