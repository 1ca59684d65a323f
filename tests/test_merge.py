"""Merge stage: decoding by content, unreadable files, exact and near duplicates, labels."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from datagen import (
    STANFORD_CHIHUAHUA,
    STANFORD_PUG,
    encode,
    jpeg,
    params_with,
    photo,
    rotated_jpeg,
    write_tree,
)
from PIL import Image, ImageEnhance

from dogbreeds.data.merge import (
    MergeError,
    UnionFind,
    hamming,
    merge_sources,
    near_pairs,
    perceptual_hash,
)

S_CHI, S_PUG = f"stanford/{STANFORD_CHIHUAHUA}", f"stanford/{STANFORD_PUG}"
# The raw folders below hold two breeds: the study's params narrowed to them.
TWO_BREEDS = {
    "data.breeds": ["chihuahua", "pug"],
    "data.stanford.folders": {"chihuahua": STANFORD_CHIHUAHUA, "pug": STANFORD_PUG},
    "data.dbi.folders": {"chihuahua": "chihuahua", "pug": "pug"},
    "merge.min_side": 16,  # good1_small (24 x 18) stays a near duplicate, not a thumbnail
}


def two_breeds(**updates):
    return params_with(**(TWO_BREEDS | updates))


def raw_files() -> dict[str, bytes]:
    """Two sources' raw folders with every kind of trouble merge must handle."""
    good1, good5 = jpeg(1), jpeg(5)
    png = photo(3)
    rgba = photo(9).convert("RGBA")
    rgba.putalpha(128)
    return {
        f"{S_CHI}/good1.jpg": good1,
        f"{S_CHI}/copy_of_good1.jpg": good1,  # same bytes
        f"{S_CHI}/good1_small.jpg": encode(photo(1).resize((24, 18)), "JPEG", quality=70),
        f"{S_CHI}/good2.jpg": jpeg(2),
        f"{S_CHI}/rotated.jpg": rotated_jpeg(4),
        f"{S_CHI}/truncated.jpg": good1[: len(good1) // 2],
        f"{S_CHI}/empty.jpg": b"",
        f"{S_CHI}/notes.jpg": b"this is not an image",
        f"{S_PUG}/really_png.jpg": encode(png, "PNG"),
        f"{S_PUG}/same_pixels.png": encode(png, "PNG", compress_level=0),  # other bytes
        f"{S_PUG}/grey.jpg": encode(photo(6, mode="L"), "JPEG"),
        f"{S_PUG}/good5.jpg": good5,
        f"{S_PUG}/good5_again.jpg": good5,  # same bytes, same breed
        "dbi/chihuahua/big_good2.jpg": jpeg(2, size=(96, 72)),  # the better copy of good2
        "dbi/chihuahua/webp.jpg": encode(photo(7), "WEBP"),
        "dbi/chihuahua/rgba.png": encode(rgba, "PNG"),
        "dbi/pug/brighter_good5.jpg": encode(
            ImageEnhance.Brightness(photo(5)).enhance(1.2), "JPEG", quality=90
        ),
        "dbi/pug/mislabelled.jpg": good1,  # the same photo filed under another breed
        "dbi/pug/good8.jpg": jpeg(8),
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def merged(tmp_path: Path) -> tuple[dict[str, dict], dict[str, dict], Path]:
    """Run merge once on raw_files(); rows keyed by path relative to the raw dir."""
    raw = write_tree(tmp_path / "raw", raw_files())
    data = two_breeds(**{"data.sources": ["stanford", "dbi"]})
    merge_sources(data.data, data.merge, raw, tmp_path / "merged", workers=1)
    prefix = f"{raw.as_posix()}/"
    manifest = {
        r["path"].removeprefix(prefix): r for r in read_csv(tmp_path / "merged/manifest.csv")
    }
    rejected = {
        r["path"].removeprefix(prefix): r for r in read_csv(tmp_path / "merged/rejected.csv")
    }
    return manifest, rejected, tmp_path


def test_every_file_is_either_kept_or_rejected(merged) -> None:
    manifest, rejected, _ = merged
    assert set(manifest) | set(rejected) == set(raw_files())
    assert not set(manifest) & set(rejected)
    assert sorted(manifest) == sorted(
        [
            f"{S_CHI}/rotated.jpg",
            f"{S_PUG}/really_png.jpg",
            f"{S_PUG}/grey.jpg",
            f"{S_PUG}/good5.jpg",
            "dbi/chihuahua/big_good2.jpg",
            "dbi/chihuahua/webp.jpg",
            "dbi/chihuahua/rgba.png",
            "dbi/pug/good8.jpg",
        ]
    )


def test_manifest_rows_describe_the_decoded_image(merged) -> None:
    manifest, _, tmp_path = merged
    assert list(next(iter(manifest.values()))) == [
        "id", "breed", "label", "source", "path", "sha256", "width", "height",
    ]  # fmt: skip
    breeds = two_breeds().data.breeds
    for rel, row in manifest.items():
        data = raw_files()[rel]
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert row["id"] == row["sha256"][:16]
        assert breeds[int(row["label"])] == row["breed"]
        assert row["source"] == rel.split("/")[0]
        assert Path(row["path"]) == tmp_path / "raw" / rel
    assert manifest[f"{S_PUG}/grey.jpg"]["breed"] == "pug"
    # EXIF orientation applied: stored 48x36 landscape, upright 36x48 portrait.
    assert (
        manifest[f"{S_CHI}/rotated.jpg"]["width"],
        manifest[f"{S_CHI}/rotated.jpg"]["height"],
    ) == (
        "36",
        "48",
    )


def test_unreadable_files_are_rejected_with_a_reason(merged) -> None:
    _, rejected, _ = merged
    assert rejected[f"{S_CHI}/empty.jpg"]["reason"] == "unreadable: empty file"
    assert rejected[f"{S_CHI}/notes.jpg"]["reason"] == "unreadable: not an image Pillow can decode"
    assert rejected[f"{S_CHI}/truncated.jpg"]["reason"].startswith("unreadable: OSError: ")
    assert "truncated" in rejected[f"{S_CHI}/truncated.jpg"]["reason"]
    assert {rejected[p]["kind"] for p in (f"{S_CHI}/empty.jpg", f"{S_CHI}/notes.jpg")} == {
        "unreadable"
    }


def test_duplicates_name_the_kept_copy_kind_and_scope(merged) -> None:
    manifest, rejected, _ = merged
    kept = {rel: row["id"] for rel, row in manifest.items()}
    expected = {
        f"{S_PUG}/good5_again.jpg": ("duplicate_bytes", "within", f"{S_PUG}/good5.jpg"),
        f"{S_PUG}/same_pixels.png": ("duplicate_pixels", "within", f"{S_PUG}/really_png.jpg"),
        f"{S_CHI}/good2.jpg": ("near_duplicate", "across", "dbi/chihuahua/big_good2.jpg"),
        "dbi/pug/brighter_good5.jpg": ("near_duplicate", "across", f"{S_PUG}/good5.jpg"),
    }
    for rel, (kind, scope, kept_rel) in expected.items():
        row = rejected[rel]
        assert (row["kind"], row["scope"]) == (kind, scope), rel
        assert row["kept_path"].endswith(kept_rel)
        assert row["reason"].startswith(f"{kind}_of:{kept[kept_rel]}")
    assert "bits)" in rejected[f"{S_CHI}/good2.jpg"]["reason"]


def test_a_photo_filed_under_two_breeds_is_a_label_conflict_and_no_copy_is_kept(merged) -> None:
    """good1 sits in a chihuahua folder (twice, and a small copy) and in a pug folder: which
    label is right is unknown, so every copy goes and each names a copy of the other breed."""
    manifest, rejected, tmp_path = merged
    raw = f"{(tmp_path / 'raw').as_posix()}/"
    copies = [f"{S_CHI}/good1.jpg", f"{S_CHI}/copy_of_good1.jpg", f"{S_CHI}/good1_small.jpg"]
    assert not set(copies + ["dbi/pug/mislabelled.jpg"]) & set(manifest)
    for rel in copies:
        row = rejected[rel]
        assert row["reason"].startswith("label_conflict: ") and row["kept_path"] == ""
        assert row["reason"].endswith(
            f"; filed as chihuahua here and as pug in {raw}dbi/pug/mislabelled.jpg; no copy kept"
        )
    assert rejected["dbi/pug/mislabelled.jpg"]["reason"] == (
        f"label_conflict: duplicate_bytes_of:{hashlib.sha256(jpeg(1)).hexdigest()[:16]}; filed "
        f"as pug here and as chihuahua in {raw}{S_CHI}/copy_of_good1.jpg; no copy kept"
    )
    assert rejected["dbi/pug/mislabelled.jpg"]["kind"] == "duplicate_bytes"


def test_too_small_and_too_elongated_photos_are_rejected(tmp_path: Path) -> None:
    files = {f"dbi/{breed}/{i}.jpg": jpeg(10 * n + i)
             for n, breed in enumerate(["chihuahua", "pug"]) for i in range(3)}  # fmt: skip
    files |= {
        "dbi/pug/dot.png": encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "dbi/pug/thumb.jpg": jpeg(31, size=(40, 12)),
        "dbi/pug/strip.png": encode(photo(32, size=(400, 50)), "PNG"),
    }
    raw = write_tree(tmp_path / "raw", files)
    params = two_breeds(**{"data.sources": ["dbi"], "merge.min_side": 32, "merge.max_aspect": 4})
    manifest, rejected = merge_sources(params.data, params.merge, raw, tmp_path / "m", workers=1)
    reasons = {Path(row["path"]).name: (row["kind"], row["reason"]) for row in rejected}
    assert reasons == {
        "dot.png": ("unreadable", "too_small: 1x1, a side under 32 px (merge.min_side)"),
        "thumb.jpg": ("unreadable", "too_small: 40x12, a side under 32 px (merge.min_side)"),
        "strip.png": (
            "unreadable",
            "too_elongated: 400x50, 8 times longer than wide (merge.max_aspect 4)",
        ),
    }
    assert len(manifest) == 6


def test_a_breed_short_of_images_names_its_folders_and_what_became_of_them(
    tmp_path: Path,
) -> None:
    """Pug: no folder in stanford, and in dbi two unreadable files and one photo that is also
    a chihuahua's. Nothing is written."""
    files = {f"stanford/{STANFORD_CHIHUAHUA}/{i}.jpg": jpeg(i) for i in range(4)}
    files |= {
        "dbi/pug/empty.jpg": b"",
        "dbi/pug/text.jpg": b"not a photo",
        "dbi/pug/c.jpg": jpeg(0),
    }
    raw = write_tree(tmp_path / "raw", files)
    params = two_breeds(**{"data.sources": ["stanford", "dbi"]})
    with pytest.raises(MergeError) as error:
        merge_sources(params.data, params.merge, raw, tmp_path / "m", workers=1)
    r = raw.as_posix()
    assert str(error.value) == (
        "breed 'pug' has 0 image(s) after merge; train, val and test need 1 each "
        "('split.min_per_breed'), so at least 3. Searched: "
        f"{r}/stanford/{STANFORD_PUG} (missing); {r}/dbi/pug (3 files: 1 also filed as "
        "chihuahua, 2 unreadable)"
    )
    assert not (tmp_path / "m").exists()


def test_a_breed_needs_three_times_split_min_per_breed(tmp_path: Path) -> None:
    files = {f"dbi/{breed}/{i}.jpg": jpeg(10 * n + i)
             for n, breed in enumerate(["chihuahua", "pug"]) for i in range(4)}  # fmt: skip
    raw = write_tree(tmp_path / "raw", files)
    params = two_breeds(**{"data.sources": ["dbi"]})
    merge_sources(params.data, params.merge, raw, tmp_path / "a", workers=1, min_per_breed=1)
    with pytest.raises(MergeError, match=r"^breed 'chihuahua' has 4 image\(s\) .* at least 6 \("):
        merge_sources(params.data, params.merge, raw, tmp_path / "b", workers=1, min_per_breed=2)


def test_an_unreadable_raw_folder_is_named(tmp_path: Path, monkeypatch) -> None:
    files = {f"dbi/{breed}/{i}.jpg": jpeg(10 * n + i)
             for n, breed in enumerate(["chihuahua", "pug"]) for i in range(3)}  # fmt: skip
    raw = write_tree(tmp_path / "raw", files)
    iterdir = Path.iterdir

    def denied(self: Path):
        if self.name == "pug":
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", denied)  # as root, chmod 000 would not stop a read
    params = two_breeds(**{"data.sources": ["dbi"]})
    with pytest.raises(
        MergeError, match=r"Searched: .*/dbi/pug \(unreadable: Permission denied\)$"
    ):
        merge_sources(params.data, params.merge, raw, tmp_path / "m", workers=1)


def test_merge_is_deterministic_and_the_pool_gives_the_same_result(tmp_path: Path) -> None:
    raw = write_tree(tmp_path / "raw", raw_files())
    params = two_breeds(**{"data.sources": ["stanford", "dbi"]})
    merge_sources(params.data, params.merge, raw, tmp_path / "one", workers=1)
    merge_sources(params.data, params.merge, raw, tmp_path / "two", workers=2)
    for name in ("manifest.csv", "rejected.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_sources_not_selected_are_ignored(tmp_path: Path) -> None:
    raw = write_tree(tmp_path / "raw", raw_files())
    params = two_breeds(**{"data.sources": ["dbi"]})
    manifest, rejected = merge_sources(params.data, params.merge, raw, tmp_path / "m", workers=1)
    assert {row["source"] for row in manifest} == {"dbi"}
    assert len(manifest) + len(rejected) == 6


def test_no_readable_image_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    raw = write_tree(tmp_path / "raw", {"dbi/pug/a.jpg": b"", "dbi/pug/b.jpg": b"junk"})
    params = two_breeds(**{"data.sources": ["dbi"]})
    with pytest.raises(MergeError, match="none of the 2 files is a readable image"):
        merge_sources(params.data, params.merge, raw, tmp_path / "merged", workers=1)
    assert not (tmp_path / "merged").exists()


# --- the pieces ---------------------------------------------------------------------------------


def test_perceptual_hash_survives_light_edits_but_separates_photos() -> None:
    image = photo(11, size=(200, 150))
    edits = [
        image.resize((100, 75)),
        Image.open(io.BytesIO(encode(image, "JPEG", quality=40))),
        ImageEnhance.Brightness(image).enhance(1.3),
        ImageEnhance.Contrast(image).enhance(0.8),
    ]
    for edited in edits:
        assert hamming(perceptual_hash(image), perceptual_hash(edited)) <= 4
    others = [perceptual_hash(photo(seed, size=(200, 150))) for seed in range(12, 40)]
    assert min(hamming(perceptual_hash(image), other) for other in others) > 10


def test_near_pairs_by_blocks_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, size=50)]
    hashes += [h ^ 0b101 for h in hashes[:5]]  # 2 bits away from 5 of them
    brute = [
        (i, j)
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if hamming(hashes[i], hashes[j]) <= 8
    ]
    assert near_pairs(hashes, 8, block=7) == sorted(brute)
    assert {(i, i + 50) for i in range(5)} <= set(brute)


def test_union_find_joins_chains_with_the_smallest_root() -> None:
    groups = UnionFind(6)
    groups.union(4, 2)
    groups.union(2, 5)
    groups.union(1, 3)
    assert [groups.find(i) for i in range(6)] == [0, 1, 2, 1, 2, 2]
