"""Deform stage: resize every image to the training resolution and deform val and test.

Train, val and test are resized (whole frame, `model.resolution` square) into uint8 tensors;
val and test additionally get one seeded random geometric deformation each (affine, then
perspective and elastic with probability p; torchvision.transforms.v2, applied at the
training resolution). Elastic alpha and sigma are given for a 224x224 image and scaled to the
training resolution, so a reduced-resolution study sees the same deformation as the paper's.
Clean copies of val and test are kept to measure how much the deformations cost.

An image's deformation depends only on (`deform.seed`, image id): its own seed is hashed
from the two, so adding or removing any other image leaves it unchanged.

Outputs: `data/prepared/{train,val,test,val_clean,test_clean}.pt`, each a dict with
`images` uint8 (N, 3, R, R), `labels` int64 (N,), `ids` (list of N str) and `breeds` (class
names in label order; see `dogbreeds.data.prepared`), and `metrics/data.json`. The preview stage
draws `metrics/deform_preview.png` from them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from dogbreeds import DogbreedsError
from dogbreeds.common.fs import atomic_path
from dogbreeds.data.images import UnreadableImage, parallel_map
from dogbreeds.data.prepared import Split, save_split
from dogbreeds.data.preprocess import load_square_pixels
from dogbreeds.params import DeformParams, Params

log = logging.getLogger(__name__)

DEFORMED_SPLITS = ("val", "test")
# output file -> (split, deformed?)
OUTPUTS = {
    "train": ("train", False),
    "val": ("val", True),
    "test": ("test", True),
    "val_clean": ("val", False),
    "test_clean": ("test", False),
}
# params.yaml key under deform -> its keys
DEFORM_KEYS = {
    "affine": {"degrees", "translate", "scale", "shear"},
    "perspective": {"distortion", "p"},
    "elastic": {"alpha", "sigma", "p"},
}


class DeformError(DogbreedsError):
    """Bad deformation params or an image that no longer decodes; the message names it."""


# ---------------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------------


def _check_keys(params: DeformParams) -> None:
    for kind, expected in DEFORM_KEYS.items():
        given = set(getattr(params, kind))
        if given != expected:
            missing, unknown = sorted(expected - given), sorted(given - expected)
            raise DeformError(
                f"params: 'deform.{kind}' must have keys {sorted(expected)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )


REFERENCE_SIDE = 224  # elastic strengths in params.yaml are in pixels of a 224x224 image


def elastic_at(alpha: float, sigma: float, resolution: int) -> tuple[float, float]:
    """Elastic (alpha, sigma) given at 224x224, rescaled for a resolution x resolution image.

    The displacement field is white noise blurred by a Gaussian of width sigma (whose amplitude
    falls as 1/sigma) times alpha. Scaling sigma by f = resolution/224 and alpha by f**2 scales
    the displacements and their smoothness length by f: the same warp, relative to the image.
    """
    f = resolution / REFERENCE_SIDE
    return alpha * f * f, sigma * f


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """The normalised 1D Gaussian that torchvision's `gaussian_blur` builds its 2D kernel from
    (the 2D kernel is the outer product of two of these): exp(-i^2 / (2 sigma^2)) at integer
    offsets i from the centre, written as torchvision writes it so the rounding matches."""
    lim = (size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=size)
    return torch.softmax(x.div(sigma).pow(2).neg(), dim=0)


def separable_blur(field: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """`v2.functional.gaussian_blur(field, [size, size], [sigma, sigma])` of a (1, 1, H, W)
    float field, as two 1D passes: the same reflect padding, then rows, then columns.

    A Gaussian kernel is separable, so this equals the 2D convolution up to float rounding,
    at 2 * size taps a pixel instead of size^2 (81 x 81 at 224 px and sigma 10).
    """
    kernel = gaussian_kernel1d(size, sigma)
    half = size // 2
    padded = F.pad(field, [half, half, half, half], mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, size))
    return F.conv2d(rows, kernel.view(1, 1, size, 1))


class SeparableElastic(v2.ElasticTransform):
    """torchvision's ElasticTransform with the displacement field smoothed by `separable_blur`.

    It draws the same random numbers in the same order (dx, then dy) and scales them the same
    way as `v2.ElasticTransform.make_params`, so a seeded image gets the same field up to float
    rounding (tests/test_deform.py holds them to it); only the blur is faster.
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        fields = []
        for sigma, alpha, extent in ((self.sigma[0], self.alpha[0], width),
                                     (self.sigma[1], self.alpha[1], height)):  # fmt: skip
            field = torch.rand(1, 1, height, width) * 2 - 1
            if sigma > 0.0:
                size = int(8 * sigma + 1)
                size += 1 - size % 2  # odd, as torchvision makes it
                field = separable_blur(field, size, sigma)
            fields.append(field * alpha / extent)
        return {"displacement": torch.cat(fields, 1).permute([0, 2, 3, 1])}  # (1, H, W, 2)


def build_deformation(params: DeformParams, resolution: int = REFERENCE_SIDE) -> v2.Compose:
    """The random deformation applied to each val/test image, from the deform params."""
    _check_keys(params)
    affine, perspective, elastic = params.affine, params.perspective, params.elastic
    alpha, sigma = elastic_at(elastic["alpha"], elastic["sigma"], resolution)
    try:
        return v2.Compose(
            [
                v2.RandomAffine(
                    degrees=affine["degrees"],
                    translate=(affine["translate"], affine["translate"]),
                    scale=tuple(affine["scale"]),
                    shear=affine["shear"],
                    interpolation=v2.InterpolationMode.BILINEAR,
                ),
                v2.RandomPerspective(
                    distortion_scale=perspective["distortion"], p=perspective["p"]
                ),
                v2.RandomApply(
                    [SeparableElastic(alpha=alpha, sigma=sigma)],
                    p=elastic["p"],
                ),
            ]
        )
    except (TypeError, ValueError) as exc:
        raise DeformError(f"params: invalid value under 'deform': {exc}") from None


def image_seed(seed: int, image_id: str) -> int:
    """A 63-bit seed for one image, hashed from (deform.seed, image id) only."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def deform_image(clean: torch.Tensor, transform: v2.Compose, seed: int) -> torch.Tensor:
    """Apply `transform` to a (3, R, R) uint8 image with torch's RNG seeded by `seed`.

    fork_rng restores the caller's RNG state afterwards, so this has no side effects. Only
    the CPU generator is seeded (the transforms draw from it alone): torch.manual_seed would
    also queue a lazy seed for CUDA, XPU and MTIA, each recording a Python stack trace, which
    took about a third of the robustness stage's time for ~11,000 images (under cProfile).
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return transform(clean)


def prepare_image(
    job: tuple[str, str, bool], resolution: int, params: DeformParams
) -> tuple[np.ndarray, np.ndarray | None]:
    """(clean, deformed or None) uint8 (3, R, R) arrays for one (path, id, deform?) job."""
    path, image_id, deformed = job
    try:
        clean = load_square_pixels(path, resolution)  # (3, R, R) uint8
    except (UnreadableImage, OSError) as exc:
        raise DeformError(
            f"{path}: cannot be read any more ({exc}); rerun the merge stage"
        ) from None
    if not deformed:
        return clean.numpy(), None
    transform = build_deformation(params, resolution)
    moved = deform_image(clean, transform, image_seed(params.seed, image_id))
    return clean.numpy(), moved.contiguous().numpy()


def one_thread() -> None:
    """Pool workers each use one core; torch's own threads would oversubscribe them."""
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# Tensors, metrics, preview
# ---------------------------------------------------------------------------------------------


def prepare_tensors(
    table: pd.DataFrame, params: Params, workers: int | None = None
) -> dict[str, dict[str, Any]]:
    """The five output dicts (see module docstring), keyed by output name."""
    build_deformation(params.deform, params.model.resolution)  # fail on bad params first
    jobs = [
        (row.path, row.id, row.split in DEFORMED_SPLITS) for row in table.itertuples(index=False)
    ]
    work = partial(prepare_image, resolution=params.model.resolution, params=params.deform)
    results = parallel_map(work, jobs, "resize+deform", workers, initializer=one_thread)
    outputs = {}
    side = params.model.resolution
    for name, (split, deformed) in OUTPUTS.items():
        rows = np.flatnonzero((table["split"] == split).to_numpy())
        arrays = [results[i][1] if deformed else results[i][0] for i in rows]
        images = np.stack(arrays) if arrays else np.zeros((0, 3, side, side), np.uint8)
        outputs[name] = {
            "images": torch.from_numpy(images),
            "labels": torch.as_tensor(table["label"].to_numpy()[rows], dtype=torch.int64),
            "ids": [str(i) for i in table["id"].to_numpy()[rows]],
            "breeds": list(params.data.breeds),
        }
    return outputs


def _count_by(frame: pd.DataFrame, outer: str, inner: str, inner_values) -> dict[str, dict]:
    """{outer value: {inner value: count, ..., "total": count}} from a table."""
    counts: dict[str, dict] = {}
    for key, group in frame.groupby(outer, sort=False):
        per = group[inner].value_counts()
        counts[str(key)] = {v: int(per.get(v, 0)) for v in inner_values} | {"total": len(group)}
    return counts


def data_metrics(
    table: pd.DataFrame, rejected: pd.DataFrame, skipped: dict[str, Counter], params: Params
) -> dict[str, Any]:
    """What went into the study: counts per split, breed and source; what was dropped, why."""
    splits = ["train", "val", "test"]
    per_split = table["split"].value_counts()
    kinds = rejected["kind"].value_counts()
    duplicates = rejected[rejected["kind"] != "unreadable"]
    exact = duplicates["kind"].isin(["duplicate_bytes", "duplicate_pixels"])
    within = duplicates["scope"] == "within"
    by_breed = _count_by(table, "breed", "split", splits)
    return {
        "resolution": params.model.resolution,
        "images": {s: int(per_split.get(s, 0)) for s in splits} | {"total": len(table)},
        "per_breed": {
            breed: by_breed.get(breed, dict.fromkeys([*splits, "total"], 0))
            for breed in params.data.breeds
        },
        "per_source": _count_by(table, "source", "split", splits),
        "rejected": {
            kind: int(kinds.get(kind, 0))
            for kind in ("unreadable", "duplicate_bytes", "duplicate_pixels", "near_duplicate")
        }
        | {"total": len(rejected)},
        "duplicates": {
            "exact_within_source": int((exact & within).sum()),
            "exact_across_sources": int((exact & ~within).sum()),
            "near_within_source": int((~exact & within).sum()),
            "near_across_sources": int((~exact & ~within).sum()),
        },
        "download_skipped": {source: dict(sorted(c.items())) for source, c in skipped.items()},
    }


def read_skipped(raw_dir: Path) -> dict[str, Counter]:
    """Per source, how many archive members the download stage skipped, by reason."""
    skipped = {}
    for path in sorted(raw_dir.glob("*/skipped.csv")):
        reasons = pd.read_csv(path, dtype=str, keep_default_na=False)["reason"]
        skipped[path.parent.name] = Counter(r.split(":")[0] for r in reasons)
    return skipped


def prepare_data(
    params: Params,
    split_csv: Path = Path("data/split/split.csv"),
    rejected_csv: Path = Path("data/merged/rejected.csv"),
    raw_dir: Path = Path("data/raw"),
    out_dir: Path = Path("data/prepared"),
    metrics_json: Path = Path("metrics/data.json"),
    workers: int | None = None,
) -> dict[str, Any]:
    """Run the whole stage; every output appears only if all of them were made."""
    table = pd.read_csv(split_csv, dtype={"id": str, "sha256": str})
    rejected = pd.read_csv(rejected_csv, dtype=str, keep_default_na=False)
    outputs = prepare_tensors(table, params, workers)
    metrics = data_metrics(table, rejected, read_skipped(raw_dir), params)
    with (
        atomic_path(out_dir) as tmp_dir,
        atomic_path(metrics_json) as tmp_json,
    ):
        tmp_dir.mkdir()
        for name, content in outputs.items():
            save_split(tmp_dir / f"{name}.pt", Split(**content))
        tmp_json.write_text(json.dumps(metrics, indent=2) + "\n")
    log.info(
        "prepared %s at %d px",
        ", ".join(f"{n}={len(o['ids'])}" for n, o in outputs.items()),
        params.model.resolution,
    )
    return metrics
