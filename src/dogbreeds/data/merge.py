"""Merge stage: one manifest of distinct, decodable images from all sources, labelled 0..6.

Every file under `data/raw/<source>/<folder>/` is decoded once (by content, EXIF-upright,
RGB) and fingerprinted three ways: sha256 of its bytes, a digest of its decoded pixels and a
64-bit perceptual hash. Files linked by any of them (same bytes, same pixels, or hashes at
most `merge.near_dup_max_bits` apart) form one cluster, within a source or across sources,
and each cluster keeps one image, so the same photo can never land in both train and test. A
cluster whose files sit in two breeds' folders is a label conflict: which folder is right is
unknown, so no copy is kept and each is listed with the breed of the other.

A photo smaller than `merge.min_side` or more elongated than `merge.max_aspect` is rejected
too. Every breed must keep enough images for each of train, val and test to hold
`split.min_per_breed`; one that does not stops the stage with the folders searched and what
became of their files, before anything is written.

Outputs: `manifest.csv` (id, breed, label, source, path, sha256, width, height) and
`rejected.csv` (path, reason, kind, scope, kept_path): every file not kept, with why.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from dogbreeds import DogbreedsError
from dogbreeds.common.fs import atomic_path
from dogbreeds.data.images import UnreadableImage, decode_rgb, parallel_map
from dogbreeds.params import DataParams, MergeParams

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["id", "breed", "label", "source", "path", "sha256", "width", "height"]
REJECTED_COLUMNS = ["path", "reason", "kind", "scope", "kept_path"]
SPLITS = 3  # train, val and test: each needs split.min_per_breed images of every breed
HASH_SIDE = 32  # pHash: DCT of a 32x32 greyscale thumbnail...
HASH_LOW = 8  # ...keeping its 8x8 lowest frequencies: 64 bits


class MergeError(DogbreedsError):
    """The raw data cannot be merged (e.g. nothing readable); the message names the folder."""


@dataclass(frozen=True)
class Candidate:
    """One raw file and the label its folder gives it."""

    path: str  # as found under raw_dir, so relative to the repo root when raw_dir is
    source: str
    breed: str
    label: int


@dataclass(frozen=True)
class Fingerprint:
    """What merge needs to know about a decodable image."""

    sha256: str  # of the file's bytes
    pixels: str  # sha256 of the decoded RGB pixels and size: same picture, other encoding
    phash: int  # 64-bit perceptual hash
    width: int
    height: int


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: `D @ x` is the DCT of the columns of x."""
    k = np.arange(n)[:, None]
    matrix = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(HASH_SIDE)


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT hash: which low-frequency coefficients of the thumbnail exceed their median.

    Low frequencies survive re-encoding, resizing, mild crops and exposure changes, so the
    same photo edited lightly keeps nearly the same bits, while different photos differ in
    about half of them.
    """
    thumb = image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    coeffs = _DCT @ np.asarray(thumb, dtype=np.float64) @ _DCT.T
    low = coeffs[:HASH_LOW, :HASH_LOW].ravel()
    return int.from_bytes(np.packbits(low > np.median(low)).tobytes(), "big")


def shape_problem(width: int, height: int, min_side: int, max_aspect: float) -> str | None:
    """Why a decoded image's size makes it no training photo (None when it is fine)."""
    short, long = min(width, height), max(width, height)
    if short < min_side:
        return f"too_small: {width}x{height}, a side under {min_side} px (merge.min_side)"
    if long > max_aspect * short:
        return (
            f"too_elongated: {width}x{height}, {long / short:.3g} times longer than wide "
            f"(merge.max_aspect {max_aspect:g})"
        )
    return None


def fingerprint(
    path: str, min_side: int = 1, max_aspect: float = float("inf")
) -> Fingerprint | str:
    """Fingerprint one file, or return why it cannot be used ("unreadable: ...", "too_small:
    ...", "too_elongated: ...")."""
    try:
        data = Path(path).read_bytes()
        image = decode_rgb(data)
    except (UnreadableImage, OSError) as exc:
        return f"unreadable: {exc}"
    if problem := shape_problem(image.width, image.height, min_side, max_aspect):
        return problem
    pixels = hashlib.sha256(f"{image.width}x{image.height}".encode())
    pixels.update(image.tobytes())
    return Fingerprint(
        sha256=hashlib.sha256(data).hexdigest(),
        pixels=pixels.hexdigest(),
        phash=perceptual_hash(image),
        width=image.width,
        height=image.height,
    )


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


# ---------------------------------------------------------------------------------------------
# Clusters of duplicates
# ---------------------------------------------------------------------------------------------


class UnionFind:
    """Disjoint sets over 0..n-1; each set's root is its smallest member (deterministic)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]  # path halving
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def near_pairs(hashes: list[int], max_bits: int, block: int = 1024) -> list[tuple[int, int]]:
    """All index pairs (i < j) whose hashes differ in at most max_bits bits.

    Compares every pair with numpy, a block of rows at a time, so memory stays at
    block x n even for the full 20,000-image Stanford set.
    """
    codes = np.array(hashes, dtype=np.uint64)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(codes), block):
        rows = codes[start : start + block]
        distance = np.bitwise_count(rows[:, None] ^ codes[None, :])
        for i, j in zip(*np.nonzero(distance <= max_bits), strict=True):
            if start + i < j:
                pairs.append((int(start + i), int(j)))
    return pairs


def cluster(prints: list[Fingerprint], max_bits: int) -> UnionFind:
    """Join images with the same bytes, the same pixels, or nearby perceptual hashes."""
    groups = UnionFind(len(prints))
    first_seen: dict[str, int] = {}
    for i, fp in enumerate(prints):
        for key in (f"bytes:{fp.sha256}", f"pixels:{fp.pixels}"):
            groups.union(first_seen.setdefault(key, i), i)
    for i, j in near_pairs([fp.phash for fp in prints], max_bits):
        groups.union(i, j)
    return groups


def duplicate_kind(dropped: Fingerprint, kept: Fingerprint) -> str:
    """How a dropped image relates to the one its cluster kept."""
    if dropped.sha256 == kept.sha256:
        return "duplicate_bytes"
    if dropped.pixels == kept.pixels:
        return "duplicate_pixels"
    return "near_duplicate"


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


def source_folders(data: DataParams, source: str) -> dict[str, str]:
    """canonical breed -> folder name under data/raw/<source>/ (synthetic uses the breeds)."""
    if source == "synthetic":
        return {breed: breed for breed in data.breeds}
    return getattr(data, source).folders


@dataclass
class Folder:
    """One breed folder of one source, as searched: what it held and what became of it."""

    path: str
    breed: str
    state: str = "found"  # found | missing | unreadable: <why>
    files: int = 0
    fates: Counter = field(default_factory=Counter)  # "kept", "unreadable", "also filed as X"

    def describe(self) -> str:
        if self.state != "found":
            return f"{self.path} ({self.state})"
        if not self.files:
            return f"{self.path} (empty)"
        fates = ", ".join(f"{n} {fate}" for fate, n in sorted(self.fates.items()))
        return f"{self.path} ({self.files} file{'s' if self.files != 1 else ''}: {fates})"


def find_candidates(data: DataParams, raw_dir: Path) -> tuple[list[Candidate], list[Folder]]:
    """Every file in the breed folders of the selected sources, in a fixed order, and the
    folders searched (a missing or unreadable one is kept to be named if its breed falls short)."""
    candidates, searched = [], []
    for source in data.sources:
        folders = source_folders(data, source)
        for label, breed in enumerate(data.breeds):
            folder = raw_dir / source / folders[breed]
            record = Folder(folder.as_posix(), breed)
            searched.append(record)
            try:
                paths = sorted(p for p in folder.iterdir() if p.is_file())
            except FileNotFoundError:
                record.state = "missing"
            except OSError as exc:
                record.state = f"unreadable: {exc.strerror or exc}"
            else:
                record.files = len(paths)
                candidates += [Candidate(p.as_posix(), source, breed, label) for p in paths]
            if record.state != "found":
                log.warning("%s: %s is %s; breed %s gets no images from it",
                            source, folder, record.state, breed)  # fmt: skip
    if not candidates:
        raise MergeError(
            f"{raw_dir}: no image files for sources {data.sources}; run the download stage"
        )
    return candidates, searched


def _keeper_rank(candidate: Candidate, fp: Fingerprint, source_rank: dict[str, int]) -> tuple:
    """Sort key choosing the copy to keep: the most pixels, then source order, then path."""
    return (-fp.width * fp.height, source_rank[candidate.source], candidate.path)


def _rejected_row(dropped: Candidate, dfp: Fingerprint, kept: Candidate, kfp: Fingerprint) -> dict:
    kind = duplicate_kind(dfp, kfp)
    reason = f"{kind}_of:{kfp.sha256[:16]}"
    if kind == "near_duplicate":
        reason += f" (d={hamming(dfp.phash, kfp.phash)} bits)"
    scope = "within" if dropped.source == kept.source else "across"
    return {
        "path": dropped.path,
        "reason": reason,
        "kind": kind,
        "scope": scope,
        "kept_path": kept.path,
    }


def _conflict_row(dropped: Candidate, dfp: Fingerprint, other: Candidate, ofp: Fingerprint) -> dict:
    """A copy of a label conflict: dropped, like every copy, with the other breed named."""
    row = _rejected_row(dropped, dfp, other, ofp)
    row["reason"] = (
        f"label_conflict: {row['reason']}; filed as {dropped.breed} here and as {other.breed} "
        f"in {other.path}; no copy kept"
    )
    row["kept_path"] = ""
    return row


def deduplicate(
    candidates: list[Candidate], prints: list[Fingerprint], max_bits: int, sources: list[str]
) -> tuple[list[int], list[dict]]:
    """Indices of the images to keep, and a rejected row for every other member of a cluster.

    A cluster filed under more than one breed keeps nothing: each copy is listed as a label
    conflict naming a copy of another breed (the first, in path order).
    """
    groups = cluster(prints, max_bits)
    members: dict[int, list[int]] = {}
    for i in range(len(prints)):
        members.setdefault(groups.find(i), []).append(i)
    source_rank = {name: rank for rank, name in enumerate(sources)}
    kept, rejected = [], []
    for group in members.values():
        if len({candidates[i].breed for i in group}) > 1:
            for i in group:
                other = min(
                    (j for j in group if candidates[j].breed != candidates[i].breed),
                    key=lambda j: candidates[j].path,
                )
                rejected.append(
                    _conflict_row(candidates[i], prints[i], candidates[other], prints[other])
                )
            log.warning(
                "label conflict: %d copies of one photo filed under %s; none kept",
                len(group), ", ".join(sorted({candidates[i].breed for i in group})),
            )  # fmt: skip
            continue
        keep = min(group, key=lambda i: _keeper_rank(candidates[i], prints[i], source_rank))
        kept.append(keep)
        for i in group:
            if i != keep:
                rejected.append(
                    _rejected_row(candidates[i], prints[i], candidates[keep], prints[keep])
                )
    return sorted(kept), rejected


def _fate(row: dict) -> str:
    """How one rejected file is summed up in the line naming a breed that fell short."""
    reason = row["reason"]
    if reason.startswith("label_conflict"):
        return "also filed as " + reason.split(" and as ", 1)[1].split(" in ", 1)[0]
    if row["kind"] == "unreadable":
        return reason.split(":", 1)[0]  # unreadable, too_small, too_elongated
    return "duplicates of kept images"


def check_breeds(
    data: DataParams,
    searched: list[Folder],
    manifest: list[dict],
    rejected: list[dict],
    min_per_breed: int,
) -> None:
    """Stop when a breed keeps fewer images than train, val and test need between them.

    The line names the breed, each folder searched for it and what became of its files, so a
    wrong folder name, an unreadable folder or photos filed under two breeds are plain.
    """
    need = SPLITS * min_per_breed
    kept = Counter(row["breed"] for row in manifest)
    short = [breed for breed in data.breeds if kept[breed] < need]
    if not short:
        return
    by_folder = {folder.path: folder for folder in searched}
    for row in manifest:
        by_folder[row["path"].rsplit("/", 1)[0]].fates["kept"] += 1
    for row in rejected:
        by_folder[row["path"].rsplit("/", 1)[0]].fates[_fate(row)] += 1
    breed = short[0]
    more = f" (also short: {', '.join(short[1:])})" if len(short) > 1 else ""
    folders = "; ".join(f.describe() for f in searched if f.breed == breed)
    raise MergeError(
        f"breed '{breed}' has {kept[breed]} image(s) after merge; train, val and test need "
        f"{min_per_breed} each ('split.min_per_breed'), so at least {need}{more}. Searched: "
        f"{folders}"
    )


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _log_summary(manifest: list[dict], rejected: list[dict]) -> None:
    per_source = Counter(row["source"] for row in manifest)
    kinds = Counter((row["kind"], row["scope"]) for row in rejected)
    log.info("kept %d images: %s", len(manifest), dict(sorted(per_source.items())))
    log.info(
        "rejected %d: %s",
        len(rejected),
        ", ".join(
            f"{kind}{'/' + scope if scope else ''}={n}"
            for (kind, scope), n in sorted(kinds.items())
        )
        or "none",
    )


def merge_sources(
    data: DataParams,
    params: MergeParams,
    raw_dir: Path = Path("data/raw"),
    out_dir: Path = Path("data/merged"),
    workers: int | None = None,
    min_per_breed: int = 1,
) -> tuple[list[dict], list[dict]]:
    """Write out_dir/manifest.csv and out_dir/rejected.csv; return their rows.

    `min_per_breed` is split.min_per_breed: every breed must keep 3 times as many images.
    """
    candidates, searched = find_candidates(data, raw_dir)
    judge = partial(fingerprint, min_side=params.min_side, max_aspect=params.max_aspect)
    results = parallel_map(judge, [c.path for c in candidates], "decode", workers)
    readable = [i for i, r in enumerate(results) if isinstance(r, Fingerprint)]
    rejected = [
        {"path": c.path, "reason": r, "kind": "unreadable", "scope": "", "kept_path": ""}
        for c, r in zip(candidates, results, strict=True)
        if isinstance(r, str)
    ]
    if not readable:
        raise MergeError(f"{raw_dir}: none of the {len(candidates)} files is a readable image")
    keep, duplicates = deduplicate(
        [candidates[i] for i in readable],
        [results[i] for i in readable],
        params.near_dup_max_bits,
        data.sources,
    )
    rejected += duplicates
    manifest = []
    for i in (readable[k] for k in keep):
        c, fp = candidates[i], results[i]
        manifest.append(
            {
                "id": fp.sha256[:16],
                "breed": c.breed,
                "label": c.label,
                "source": c.source,
                "path": c.path,
                "sha256": fp.sha256,
                "width": fp.width,
                "height": fp.height,
            }
        )
    rejected.sort(key=lambda row: row["path"])
    check_breeds(data, searched, manifest, rejected, min_per_breed)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        _write_csv(tmp / "manifest.csv", MANIFEST_COLUMNS, manifest)
        _write_csv(tmp / "rejected.csv", REJECTED_COLUMNS, rejected)
    _log_summary(manifest, rejected)
    return manifest, rejected
