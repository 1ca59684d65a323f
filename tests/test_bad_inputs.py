# ruff: noqa: E501  (the table below is read as Markdown: one row per line)
"""The battery of bad inputs: every one is handled, and every one is tested here.

Images are decoded by `images.decode_rgb` (merge and deform): a usable one becomes upright RGB
of its true size, an unusable one an `UnreadableImage` whose reason merge writes to
`data/merged/rejected.csv` next to the file's path. Archive members are judged by the download
stage: skipped ones are listed in `data/raw/<source>/skipped.csv` with the reason, never
written, and nothing lands outside `data/raw/<source>/`. Whole-archive and params errors stop
the stage with one line `error: ...` on stderr, exit status 1, and no output.

| #  | Bad input                              | What happens (what is printed or recorded)                           |
|----|----------------------------------------|----------------------------------------------------------------------|
|  1 | truncated JPEG                         | rejected: `OSError: image file is truncated (40 bytes not processed)` |
|  2 | empty image file                       | rejected: `empty file`                                               |
|  3 | text file named `.jpg`                 | rejected: `not an image Pillow can decode`                           |
|  4 | PNG named `.jpg`                       | decoded by content, RGB                                              |
|  5 | GIF named `.jpg`                       | decoded by content, RGB                                              |
|  6 | WebP named `.jpg`                      | decoded by content, RGB                                              |
|  7 | TIFF named `.jpg`                      | decoded by content, RGB                                              |
|  8 | greyscale JPEG                         | RGB with three equal channels                                        |
|  9 | CMYK JPEG                              | RGB                                                                  |
| 10 | palette PNG with a transparent colour  | RGB, transparent pixels white                                        |
| 11 | RGBA PNG with transparency             | RGB, transparent pixels white                                        |
| 12 | 16-bit greyscale PNG                   | RGB from the top byte (Pillow alone clips it to white)               |
| 13 | JPEG with EXIF orientation 6           | rotated upright: 36 x 48, not 48 x 36                                |
| 14 | PNG of zero width                      | rejected: `not an image Pillow can decode`                           |
| 15 | decompression bomb (20000 x 20000 PNG) | rejected before decoding: `too many pixels (decompression bomb guard: over 89478485)` |
| 16 | bomb between 1x and 2x Pillow's limit  | rejected the same way (Pillow alone only warns and decodes it)       |
| 17 | tar member `/abs/path.jpg`             | skipped: `absolute_path`                                             |
| 18 | tar member `../evil.jpg`               | skipped: `parent_reference`                                          |
| 19 | tar symlink member                     | skipped: `symlink`                                                   |
| 20 | tar hardlink member                    | skipped: `hardlink`                                                  |
| 21 | tar character device member            | skipped: `device`                                                    |
| 22 | tar FIFO member                        | skipped: `not_regular_file`                                          |
| 23 | zip-slip member `../../evil.jpg`       | skipped: `parent_reference`                                          |
| 24 | zip-slip member `..\\evil.jpg`         | skipped: `parent_reference`                                          |
| 25 | truncated tar                          | `data.stanford: <path> is not a readable archive: unexpected end of data` |
| 26 | truncated tar.gz                       | `... is not a readable archive: Compressed file ended before the end-of-stream marker was reached` |
| 27 | zero-byte archive                      | `data.stanford: <path> is empty (0 bytes)`                           |
| 28 | HTML error page saved as `.tar`        | `data.stanford: <path> is an HTML page, not an archive (an error or login page saved in its place?)` |
| 29 | typo'd key `train.batchsize`           | `params.yaml: params: unknown key 'train.batchsize'; did you mean 'train.batch_size'?` |
| 30 | `data.stanford.sha256: 0`              | `... 'data.stanford.sha256' must be a quoted string of 64 hex digits or '', got the int 0 (YAML reads unquoted digits as a number)` |
| 31 | `train.augment.hflip: "false"`         | `... 'train.augment.hflip' must be true or false, got 'false'`       |
| 32 | an epoch count of -1                   | `... 'train.schedules.s20_14_6.epochs' must hold integers >= 1, got -1` |
| 33 | `train.archs: []`                      | `... 'train.archs' must be a non-empty list`                         |
| 34 | unknown schedule `--schedule s20_14_7` | `unknown --schedule 's20_14_7'; params 'train.schedules': s20_14_6, s50_7_3, s50_14_6` |
| 35 | `split.val + split.test >= 1`          | `... 'split.val' + 'split.test' must be < 1, got 1.0`                |
| 36 | `model.resolution: 8`                  | `... 'model.resolution' is 8: too small for the nets, which halve the side 4 times; use >= 16` |
| 37 | a breed with 2 images after merge      | `breed 'pug' has 2 image(s) after merge; a stratified train/val/test split needs at least 3 per breed (...)` |
| 38 | a directory source changed upstream    | `data.dbi: tree hash mismatch for <path>: expected <pin> (data.dbi.sha256), got <hash>` (test_sources) |

Rows 1-16 are `test_images`, 17-24 `test_archive_members`, 25-28 `test_broken_archives`,
29-36 `test_params` (and, as a stage run, `test_a_bad_param_stops_the_stage_in_one_line`),
37 `test_a_breed_too_small_to_split_stops_the_split_stage`.
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import os
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from datagen import STANFORD_CHIHUAHUA, encode, jpeg, photo, rotated_jpeg, set_keys, stanford_files
from PIL import Image

from dogbreeds.data.images import UnreadableImage, decode_rgb
from dogbreeds.data.sources import fetch_source
from dogbreeds.params import ParamsError, parse_params, select_run

ROOT = Path(__file__).resolve().parents[1]
TREE = yaml.safe_load((ROOT / "params.yaml").read_text())
STAGE_ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

# ----------------------------------------------------------------------------- images


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims another size (with a valid CRC): nothing is decoded."""
    data = bytearray(encode(photo(1), "PNG"))
    body = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = body
    data[29:33] = struct.pack(">I", zlib.crc32(body))
    return bytes(data)


def transparent(mode: str) -> bytes:
    """A PNG whose left half is fully transparent black."""
    image = photo(2).convert("RGBA")
    pixels = np.asarray(image).copy()
    pixels[:, :24] = 0
    image = Image.fromarray(pixels, "RGBA")
    if mode == "P":  # palette with one transparent index
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        index = image.getpixel((0, 0))
        return encode(image, "PNG", transparency=index)
    return encode(image, "PNG")


def sixteen_bit() -> bytes:
    ramp = np.linspace(0, 65535, 48 * 36).reshape(36, 48).astype(np.uint16)
    return encode(Image.fromarray(ramp), "PNG")


GOOD_JPEG = jpeg(1)
IMAGES = {  # row: (bytes, None for a usable image or the rejection reason)
    "truncated": (GOOD_JPEG[: len(GOOD_JPEG) // 2], "OSError: image file is truncated"),
    "empty": (b"", "empty file"),
    "not an image": (b"this is not an image", "not an image Pillow can decode"),
    "png as jpg": (encode(photo(3), "PNG"), None),
    "gif as jpg": (encode(photo(3), "GIF"), None),
    "webp as jpg": (encode(photo(3), "WEBP"), None),
    "tiff as jpg": (encode(photo(3), "TIFF"), None),
    "greyscale": (encode(photo(4, mode="L"), "JPEG"), None),
    "cmyk": (encode(photo(5).convert("CMYK"), "JPEG"), None),
    "palette transparency": (transparent("P"), None),
    "rgba transparency": (transparent("RGBA"), None),
    "16-bit": (sixteen_bit(), None),
    "exif rotated": (rotated_jpeg(6), None),
    "zero size": (png_claiming(0, 36), "not an image Pillow can decode"),
    "bomb": (png_claiming(20_000, 20_000), "too many pixels (decompression bomb guard"),
    "bomb under 2x": (png_claiming(10_000, 10_000), "too many pixels (decompression bomb guard"),
}


@pytest.mark.parametrize("row", IMAGES)
def test_images(row: str) -> None:
    data, reason = IMAGES[row]
    if reason is not None:
        with pytest.raises(UnreadableImage) as error:
            decode_rgb(data)
        assert str(error.value).startswith(reason)
        return
    image = decode_rgb(data)
    pixels = np.asarray(image).astype(int)
    assert image.mode == "RGB"
    assert image.size == ((36, 48) if row == "exif rotated" else (48, 36))
    if row == "greyscale":
        assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    if "transparency" in row:
        assert (pixels[:, :24] >= 250).all()  # composited onto white, not black
    if row == "16-bit":
        assert 100 < pixels.mean() < 155 and pixels.min() == 0  # the ramp, not saturated


# ----------------------------------------------------------------------------- archives

FOLDERS = TREE["data"]["stanford"]["folders"]


def source(path: Path):
    from dogbreeds.params import SourceParams

    return SourceParams(url=str(path), sha256="", folders=FOLDERS)


def tar_member(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


MEMBERS = {  # row: (member name, tar type or "zip", expected skip reason)
    "absolute": ("/tmp/dogbreeds_abs_evil.jpg", tarfile.REGTYPE, "absolute_path"),
    "parent": ("../dogbreeds_evil.jpg", tarfile.REGTYPE, "parent_reference"),
    "symlink": (f"Images/{STANFORD_CHIHUAHUA}/link.jpg", tarfile.SYMTYPE, "symlink"),
    "hardlink": (f"Images/{STANFORD_CHIHUAHUA}/hard.jpg", tarfile.LNKTYPE, "hardlink"),
    "device": (f"Images/{STANFORD_CHIHUAHUA}/tty.jpg", tarfile.CHRTYPE, "device"),
    "fifo": (f"Images/{STANFORD_CHIHUAHUA}/pipe.jpg", tarfile.FIFOTYPE, "not_regular_file"),
    "zip slip": ("../../dogbreeds_evil.jpg", "zip", "parent_reference"),
    "zip slip backslash": ("..\\dogbreeds_evil.jpg", "zip", "parent_reference"),
}


@pytest.mark.parametrize("row", MEMBERS)
def test_archive_members(row: str, tmp_path: Path) -> None:
    name, kind, reason = MEMBERS[row]
    good = {f"Images/{STANFORD_CHIHUAHUA}/good.jpg": GOOD_JPEG}
    work = tmp_path / "work"  # the archive's `..` would be tmp_path
    work.mkdir()
    if kind == "zip":
        archive = work / "images.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(*next(iter(good.items())))
            zf.writestr(name, b"x")
    else:
        archive = work / "images.tar"
        with tarfile.open(archive, "w") as tar:
            for member, data in good.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            if kind == tarfile.REGTYPE:
                info = tarfile.TarInfo(name)
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
            else:
                tar.addfile(tar_member(name, kind, "/etc/passwd" if "link" in row else ""))

    out = work / "out"
    fetch_source("stanford", source(archive), out, work / "dl")

    with open(out / "skipped.csv", newline="") as f:
        assert {r["member"]: r["reason"] for r in csv.DictReader(f)} == {name: reason}
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [f"{STANFORD_CHIHUAHUA}/good.jpg", "skipped.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # nothing escaped
    assert not Path("/tmp/dogbreeds_abs_evil.jpg").exists()


def tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in stanford_files().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TAR = tar_bytes()
BROKEN = {  # row: (file name, bytes, message after "data.stanford: <path> ")
    "truncated tar": ("images.tar", TAR[: len(TAR) // 2 + 100], "is not a readable archive: "),
    "truncated tar.gz": ("images.tar.gz", gzip.compress(TAR)[:2000], "is not a readable archive"),
    "zero bytes": ("images.tar", b"", "is empty (0 bytes)"),
    "html page": (
        "images.tar",
        b"\n<!DOCTYPE html>\n<html><body>Rate limit exceeded</body></html>",
        "is an HTML page, not an archive",
    ),
}


@pytest.mark.parametrize("row", BROKEN)
def test_broken_archives(row: str, tmp_path: Path) -> None:
    name, data, message = BROKEN[row]
    archive = tmp_path / name
    archive.write_bytes(data)
    params = set_keys(copy.deepcopy(TREE), {"data.sources": ["stanford"]})
    set_keys(params, {"data.stanford.url": str(archive), "data.stanford.sha256": ""})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    proc = stage("download", tmp_path)

    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith(f"error: data.stanford: {archive} {message}")
    assert not (tmp_path / "data" / "raw").exists()  # no partial output
    assert not [p for p in (tmp_path / "data").iterdir() if p.name != "downloads"]


# ----------------------------------------------------------------------------- params


def stage(name: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    script = ROOT / "stages" / f"{name}.py"
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, env=STAGE_ENV
    )


PARAMS = {  # row: (key, value, message)
    "typo": ("train.batchsize", 16, "unknown key 'train.batchsize'; did you mean 'train.batch_size'?"),
    "sha256 0": ("data.stanford.sha256", 0, "'data.stanford.sha256' must be a quoted string"),
    "hflip string": ("train.augment.hflip", "false", "'train.augment.hflip' must be true or false"),
    "epochs -1": ("train.schedules.s20_14_6.epochs", [-1, 14, 6], "must hold integers >= 1, got -1"),
    "empty archs": ("train.archs", [], "'train.archs' must be a non-empty list"),
    "val + test": ("split.val", 0.75, "'split.val' + 'split.test' must be < 1, got 1.0"),
    "resolution": ("model.resolution", 8, "'model.resolution' is 8: too small for the nets"),
}  # fmt: skip


@pytest.mark.parametrize("row", PARAMS)
def test_params(row: str) -> None:
    key, value, message = PARAMS[row]
    with pytest.raises(ParamsError) as error:
        parse_params(set_keys(copy.deepcopy(TREE), {key: value}))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_schedule_names_the_known_ones() -> None:
    with pytest.raises(ParamsError, match=r"^unknown --schedule 's20_14_7'; params .*s50_14_6$"):
        select_run(parse_params(copy.deepcopy(TREE)), "cnn", "s20_14_7", 0)


def test_a_bad_param_stops_the_stage_in_one_line(tmp_path: Path) -> None:
    """sha256: 0 written as YAML does it (unquoted digits), run as the download stage."""
    text = (ROOT / "params.yaml").read_text()
    pinned = TREE["data"]["stanford"]["sha256"]
    (tmp_path / "params.yaml").write_text(text.replace(f"sha256: {pinned}", "sha256: 0"))

    proc = stage("download", tmp_path)

    assert proc.returncode == 1
    assert proc.stderr == (
        "error: params.yaml: params: 'data.stanford.sha256' must be a quoted string of 64 hex "
        "digits or '', got the int 0 (YAML reads unquoted digits as a number)\n"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]  # nothing written


def test_a_breed_too_small_to_split_stops_the_split_stage(tmp_path: Path) -> None:
    breeds = TREE["data"]["breeds"]
    rows = [
        {"id": f"{b}{i}", "breed": b, "label": n, "source": "synthetic", "path": f"{b}/{i}.png",
         "sha256": "0" * 64, "width": 48, "height": 48}
        for n, b in enumerate(breeds)
        for i in range(2 if b == "pug" else 20)
    ]  # fmt: skip
    merged = tmp_path / "data" / "merged"
    merged.mkdir(parents=True)
    with open(merged / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())

    proc = stage("split", tmp_path)

    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: breed 'pug' has 2 image(s) after merge")
    assert not (tmp_path / "data" / "split").exists()
