"""Split stage: stratified by breed, seeded, fractions from params, manifest columns kept."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from datagen import params_with

from dogbreeds.data.split import SplitError, assign_splits, split_manifest

BREEDS = params_with().data.breeds


def manifest(per_breed: int = 20) -> pd.DataFrame:
    """A manifest-shaped table; ids have leading zeros, as hex ids sometimes do."""
    rows = [
        {"id": f"{label:02d}{i:014d}", "breed": breed, "label": label, "source": "synthetic",
         "path": f"data/raw/synthetic/{breed}/{i:04d}.png", "sha256": "0" * 64,
         "width": 48, "height": 48}
        for label, breed in enumerate(BREEDS)
        for i in range(per_breed)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_each_breed_is_split_in_the_params_fractions() -> None:
    table = assign_splits(manifest(20), params_with().split)  # val 0.25, test 0.25
    counts = table.groupby(["breed", "split"]).size().unstack()
    assert (counts["train"] == 10).all()
    assert (counts["val"] == 5).all()
    assert (counts["test"] == 5).all()


def test_split_is_seeded() -> None:
    params = params_with().split
    first, again = assign_splits(manifest(), params), assign_splits(manifest(), params)
    other = assign_splits(manifest(), params_with(**{"split.seed": params.seed + 1}).split)
    assert first["split"].tolist() == again["split"].tolist()
    assert first["split"].tolist() != other["split"].tolist()


def test_split_csv_keeps_the_manifest_columns_and_order(tmp_path: Path) -> None:
    source = manifest()
    source.to_csv(tmp_path / "manifest.csv", index=False)
    split_manifest(params_with().split, tmp_path / "manifest.csv", tmp_path / "split")
    table = pd.read_csv(tmp_path / "split" / "split.csv", dtype={"id": str, "sha256": str})
    assert list(table.columns) == [*source.columns, "split"]
    assert table["id"].tolist() == source["id"].tolist()  # leading zeros survive
    assert set(table["split"]) == {"train", "val", "test"}


def test_too_few_images_is_an_error_naming_the_params(tmp_path: Path) -> None:
    source = manifest(per_breed=3)  # one per split, but a test share of 0.25 is 5 < 7 breeds
    source.to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(SplitError, match=r"split.val=0.25, split.test=0.25"):
        split_manifest(params_with().split, tmp_path / "manifest.csv", tmp_path / "split")
    assert not (tmp_path / "split").exists()


def test_a_breed_too_small_to_stratify_is_named(tmp_path: Path) -> None:
    source = manifest(per_breed=20)
    source = source[(source["breed"] != "pug") | (source.index % 20 < 2)]  # 2 pugs left
    source.to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(
        SplitError, match=r"^breed 'pug' has 2 image\(s\) after merge; .* at least 3"
    ):
        split_manifest(params_with().split, tmp_path / "manifest.csv", tmp_path / "split")
    assert not (tmp_path / "split").exists()
