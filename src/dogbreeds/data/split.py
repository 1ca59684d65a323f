"""Split stage: assign each merged image to train, val or test, stratified by breed and seeded.

Two calls of scikit-learn's `train_test_split`: first the test set is cut from everything,
then val from the rest, scaled so that val is `split.val` of the whole. Stratifying keeps
every breed's share the same in all three sets.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from dogbreeds import DogbreedsError
from dogbreeds.common.fs import atomic_path
from dogbreeds.params import SplitParams

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class SplitError(DogbreedsError):
    """The manifest cannot be split as asked; the message names the params."""


def check_breed_counts(manifest: pd.DataFrame) -> None:
    """Every breed needs an image in each of train, val and test to be stratified at all.

    scikit-learn's own error names neither the breed nor the fix, so the smallest breed is
    named first; fractions that are still too small for the counts fail below, named too.
    """
    counts = manifest["breed"].value_counts()
    few = counts[counts < len(SPLITS)]
    if len(few):
        breed, n = few.index[0], int(few.iloc[0])
        raise SplitError(
            f"breed '{breed}' has {n} image(s) after merge; a stratified train/val/test split "
            f"needs at least {len(SPLITS)} per breed (see data/merged/rejected.csv and the "
            f"source's 'data.<source>.folders')"
        )


def assign_splits(manifest: pd.DataFrame, params: SplitParams) -> pd.DataFrame:
    """The manifest with a `split` column; rows keep their order."""
    check_breed_counts(manifest)
    try:
        rest, test = train_test_split(
            manifest, test_size=params.test, random_state=params.seed, stratify=manifest["breed"]
        )
        val_share = params.val / (1 - params.test)  # of what is left after the test cut
        train, val = train_test_split(
            rest, test_size=val_share, random_state=params.seed, stratify=rest["breed"]
        )
    except ValueError as exc:  # e.g. a breed with too few images to appear in every split
        raise SplitError(
            f"cannot split {len(manifest)} images with split.val={params.val}, "
            f"split.test={params.test}: {exc}"
        ) from None
    split = pd.Series("train", index=manifest.index)
    split[val.index] = "val"
    split[test.index] = "test"
    return manifest.assign(split=split)


def split_manifest(
    params: SplitParams,
    manifest_csv: Path = Path("data/merged/manifest.csv"),
    out_dir: Path = Path("data/split"),
) -> pd.DataFrame:
    """Read the manifest, assign splits and write out_dir/split.csv atomically."""
    manifest = pd.read_csv(manifest_csv, dtype={"id": str, "sha256": str})
    table = assign_splits(manifest, params)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        table.to_csv(tmp / "split.csv", index=False)
    counts = table["split"].value_counts()
    log.info(
        "split %d images: %s", len(table), ", ".join(f"{s}={counts.get(s, 0)}" for s in SPLITS)
    )
    return table
