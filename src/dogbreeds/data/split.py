"""Split stage: assign each merged image to train, val or test, stratified by breed and seeded.

Two calls of scikit-learn's `train_test_split`: first the test set is cut from everything,
then val from the rest, scaled so that val is `split.val` of the whole. Stratifying keeps
every breed's share the same in all three sets. Every breed of `data.breeds` must end with at
least `split.min_per_breed` images in each set, a breed with none included: a net trained on
six classes and scored on seven would otherwise pass unnoticed.
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


def check_breed_counts(
    manifest: pd.DataFrame, min_per_breed: int = 1, breeds: list[str] | None = None
) -> None:
    """Every breed needs `min_per_breed` images in each of train, val and test.

    scikit-learn's own error names neither the breed nor the fix, so the smallest breed is
    named first, a breed of `breeds` with no image at all included; fractions that are still
    too small for the counts fail below, named too.
    """
    counts = manifest["breed"].value_counts()
    if breeds is not None:
        counts = counts.reindex(list(dict.fromkeys([*breeds, *counts.index])), fill_value=0)
    need = len(SPLITS) * min_per_breed
    few = counts[counts < need].sort_values(kind="stable")
    if len(few):
        breed, n = few.index[0], int(few.iloc[0])
        raise SplitError(
            f"breed '{breed}' has {n} image(s) after merge; a stratified train/val/test split "
            f"needs at least {need} per breed ('split.min_per_breed' {min_per_breed} in each; see "
            f"data/merged/rejected.csv and the source's 'data.<source>.folders')"
        )


def check_split_counts(table: pd.DataFrame, params: SplitParams) -> None:
    """After the split: each breed has `split.min_per_breed` images in each set, or the line
    names the breed, the set and the fraction to raise."""
    counts = table.groupby(["breed", "split"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(SPLITS), fill_value=0)
    for part in SPLITS:
        short = counts[counts[part] < params.min_per_breed]
        if len(short):
            breed, n = short.index[0], int(short[part].iloc[0])
            fix = {
                "train": "lower split.val or split.test",
                "val": f"raise split.val (now {params.val})",
                "test": f"raise split.test (now {params.test})",
            }[part]
            raise SplitError(
                f"breed '{breed}' gets {n} image(s) in {part}, fewer than 'split.min_per_breed' "
                f"{params.min_per_breed}; {fix}, or add images of it"
            )


def assign_splits(
    manifest: pd.DataFrame, params: SplitParams, breeds: list[str] | None = None
) -> pd.DataFrame:
    """The manifest with a `split` column; rows keep their order. `breeds` (data.breeds) are
    the breeds that must all be there."""
    check_breed_counts(manifest, params.min_per_breed, breeds)
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
    table = manifest.assign(split=split)
    check_split_counts(table, params)
    return table


def split_manifest(
    params: SplitParams,
    manifest_csv: Path = Path("data/merged/manifest.csv"),
    out_dir: Path = Path("data/split"),
    breeds: list[str] | None = None,
) -> pd.DataFrame:
    """Read the manifest, assign splits and write out_dir/split.csv atomically."""
    manifest = pd.read_csv(manifest_csv, dtype={"id": str, "sha256": str})
    table = assign_splits(manifest, params, breeds)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        table.to_csv(tmp / "split.csv", index=False)
    counts = table["split"].value_counts()
    log.info(
        "split %d images: %s", len(table), ", ".join(f"{s}={counts.get(s, 0)}" for s in SPLITS)
    )
    return table
