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
| 27 | zero-byte archive                      | `data.stanford: <path> is an empty file (0 bytes), not a tar archive` |
| 28 | HTML error page saved as `.tar`        | `data.stanford: <path> is an HTML page of 62 bytes, not a tar archive (an error or login page saved in its place?)` |
| 29 | typo'd key `train.batchsize`           | `params.yaml: params: unknown key 'train.batchsize'; did you mean 'train.batch_size'?` |
| 30 | `data.stanford.sha256: 0`              | `... 'data.stanford.sha256' must be a quoted string of 64 hex digits or '', got the int 0 (YAML reads unquoted digits as a number)` |
| 31 | `train.normalize: "false"`             | `... 'train.normalize' must be true or false, got 'false'`           |
| 32 | an epoch count of -1                   | `... 'train.schedules.s20_14_6.epochs' must hold integers >= 1, got -1` |
| 33 | `train.archs: []`                      | `... 'train.archs' must be a non-empty list`                         |
| 34 | unknown schedule `--schedule s20_14_7` | `unknown --schedule 's20_14_7'; params 'train.schedules': s20_14_6, s50_7_3, s50_14_6` |
| 35 | `split.val + split.test >= 1`          | `... 'split.val' + 'split.test' must be < 1, got 1.0`                |
| 36 | `model.resolution: 8`                  | `... 'model.resolution' is 8: too small for the nets, which halve the side 4 times; use >= 16` |
| 37 | a breed with 2 images after merge      | `breed 'pug' has 2 image(s) after merge; a stratified train/val/test split needs at least 3 per breed (...)` |
| 38 | a directory source changed upstream    | `data.dbi: tree hash mismatch for <path>: expected <pin> (data.dbi.sha256), got <hash>` (test_sources) |
| 39 | `models/<run>.pt` cut in half          | evaluate: `models/<run>.pt: truncated or not a dogbreeds checkpoint (PytorchStreamReader failed reading zip archive: failed finding central directory); restore DVC's copy with `dvc checkout --force models/<run>.pt` (or delete it and run dvc repro)` |
| 40 | `data/prepared/train.pt` cut in half   | train: `data/prepared/train.pt: truncated or not a prepared split (<torch's reason>); restore DVC's copy with `dvc checkout --force data/prepared` (or delete it and run dvc repro)` |
| 41 | a resume state cut in half             | warning `<root>/.resume/<run>-<key>.pt: unreadable resume state (PytorchStreamReader ...); training from scratch`, then the same weights as an uninterrupted run |
| 42 | `mlflow.db` cut in half                | `<root>/mlflow.db: a damaged SQLite database (database disk image is malformed); move it aside (mv <db> <db>.broken) and rerun to start a new store (the runs it held are lost unless you have a copy)` |
| 43 | `mlflow.db` overwritten by an HTML page | `<root>/mlflow.db: not an SQLite database; move it aside (...) ...`; after the `mv` the stage runs |
| 44 | full disk writing `data/prepared`      | deform: `data/prepared: no space left on device while writing it (nothing was written); free some space and run the stage again` (test_full_disk) |
| 45 | full disk writing a checkpoint         | train: `models/<run>.pt: no space left on device ...`; the rerun resumes after the last epoch (test_full_disk) |
| 46 | full disk writing the resume state     | train: `<root>/.resume/<run>-<key>.pt: no space left on device ...` (test_full_disk) |
| 47 | a breed's folder missing from every source | merge: `breed 'pug' has 0 image(s) after merge; train, val and test need 1 each ('split.min_per_breed'), so at least 3. Searched: data/raw/stanford/n02110958-pug (missing)` |
| 48 | every file of a breed unreadable       | merge: `... Searched: data/raw/stanford/n02110958-pug (3 files: 3 unreadable)` |
| 49 | every file of a breed a copy of another breed's | merge: both copies dropped as label conflicts (listed in rejected.csv, `label_conflict: duplicate_bytes_of:<id>; filed as pug here and as chihuahua in <path>; no copy kept`), so: `breed 'chihuahua' has 0 image(s) after merge; ... so at least 3 (also short: pug). Searched: data/raw/stanford/n02085620-Chihuahua (3 files: 3 also filed as pug)` |
| 50 | two breeds mapped to one folder        | `... 'data.dbi.folders' maps two breeds to the folder 'labrador' (golden_retriever, labrador_retriever); each breed needs a folder of its own` |
| 51 | a manifest without one of the breeds   | split: `breed 'pug' has 0 image(s) after merge; a stratified train/val/test split needs at least 3 per breed ('split.min_per_breed' 1 in each; see data/merged/rejected.csv and the source's 'data.<source>.folders')` |
| 52 | HTTP 200 with an HTML page for `images.tar` | `params: 'data.stanford.url': <url> sent an HTML page of 55 bytes, not a tar archive (an error or login page saved in its place?); the download was deleted (run again once the server sends the archive)`; nothing cached, the next run after the server is fixed downloads the archive |
| 53 | an HTML page cached by an older version | warning `data.stanford.url: <cache> downloaded earlier is an HTML page of 55 bytes, not a tar archive (...); fetching it again`, then the archive |
| 54 | a zip named `.tar`                     | `data.stanford: <path> is a zip archive of 14 KiB, not a tar archive; name it .zip to use it as one` |
| 55 | a FIFO as the url                      | `params: 'data.stanford.url': <path> is a FIFO (named pipe), not an archive file or a directory` (no hang) |
| 56 | `file:///dev/zero` as the url          | `params: 'data.stanford.url': /dev/zero is a character device, not an archive file or a directory` (no hang) |
| 57 | a PNG named `.tar`                     | `data.stanford: <path> is a PNG image of 3350 bytes, not a tar archive`, before a byte is hashed |
| 58 | a member over `data.extract.max_member_mib` | skipped unread: `too_large: over 0.01 MiB (data.extract.max_member_mib)` |
| 59 | a zip member that expands 1000-fold    | skipped, nothing past 1 MiB written: `compression_ratio: expands over 100-fold (data.extract.max_ratio)` |
| 60 | a tar.gz bomb                          | `data.stanford: <path> expands over 100-fold ('data.extract.max_ratio') by Images/n02085620-Chihuahua/bomb.jpg: a decompression bomb, not a photo archive (nothing was kept)` |
| 61 | more than `data.extract.max_total_mib` in all | `data.stanford: the sources would write more than 0.01 MiB ('data.extract.max_total_mib'); stopped before Images/n02085620-Chihuahua/more.jpg (nothing was kept; raise the cap if the data really are that big)` |
| 62 | a latin-1 member name (`caf\xe9.jpg`)  | written as `café.jpg`, listed in `data/raw/<source>/renamed.csv` (`Images/<folder>/caf\xe9.jpg,Images/<folder>/café.jpg`) |
| 63 | a member name over 255 bytes           | skipped: `name_too_long: over 255 bytes`; the other members extracted |
| 64 | a tar holding one name twice           | the last copy kept, as `tar x`; the first listed: `duplicate_name: replaced by a later member of the same name` |
| 65 | an unreadable file in a directory source | skipped: `unreadable: Permission denied` |
| 66 | an unreadable breed folder in a directory source | skipped: `unreadable_folder: Permission denied`; warning `stanford: folder n02110958-pug is unreadable (Permission denied); its breed gets no images here` |
| 67 | `data.synthetic.seed: -1`              | `... 'data.synthetic.seed' must be >= 0, got -1` |
| 68 | `split.seed: -1`                       | `... 'split.seed' must be >= 0, got -1` |
| 69 | `deform.affine.scale: [1.15, 0.85]`    | `... 'deform.affine.scale' must be [low, high] with 0 < low <= high, got [1.15, 0.85]` |
| 70 | `train.batch_size: 1` at `model.resolution: 16` | `... 'train.batch_size' 1 at 'model.resolution' 16 gives BatchNorm one value per channel (the last feature map is 1x1); use a batch of 2 or more, or a resolution of 17 or more` |
| 71 | `train.one_cycle.pct_start: 1.0`       | `... 'train.one_cycle.pct_start' must be < 1, got 1.0` |
| 72 | `deform.elastic.sigma: 0`              | `... 'deform.elastic.sigma' must be > 0, got 0` |
| 73 | float TIFF with pixels in [0, 1]       | RGB, scaled by 255 (Pillow alone: all black)                         |
| 74 | float TIFF from -5 to 995              | rejected: `float pixels from -5 to 995: neither [0, 1] nor [0, 255], no known scale` |
| 75 | int32 TIFF beyond 16 bits              | rejected: `32-bit integer pixels up to 2147483647: beyond 16 bits, no known scale` (Pillow alone: mostly white) |
| 76 | 1x1 and 20000x1 images                 | rejected: `too_small: 1x1, a side under 32 px (merge.min_side)`, `too_small: 20000x1, ...` |
| 77 | a 400x50 strip                         | rejected: `too_elongated: 400x50, 8 times longer than wide (merge.max_aspect 4)` |

Rows 47-77 (round three, issue 32) are the tests below the corrupted files, in order; every
params row is also drawn from by `tests/test_params_property.py`.

Rows 1-16 are `test_images`, 17-24 `test_archive_members`, 25-28 `test_broken_archives`,
29-36 `test_params` (and, as a stage run, `test_a_bad_param_stops_the_stage_in_one_line`),
37 `test_a_breed_too_small_to_split_stops_the_split_stage`, 39-43 the `corrupted files` tests
below (each also runs the remedy it names), 44-46 `tests/test_full_disk.py` (a real tmpfs
filled up where the tests may mount, an injected ENOSPC elsewhere; no half-written output is
left, the MLflow run of the failed attempt ends FAILED, and the rerun with space succeeds).
"""

from __future__ import annotations

import copy
import csv
import gzip
import http.server
import io
import os
import re
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from datagen import STANFORD_CHIHUAHUA, encode, jpeg, photo, rotated_jpeg, set_keys, stanford_files
from PIL import Image

from dogbreeds.data.images import UnreadableImage, decode_rgb
from dogbreeds.data.sources import SourceError, fetch_source
from dogbreeds.params import ParamsError, parse_params, read_yaml, select_run

ROOT = Path(__file__).resolve().parents[1]
TREE = read_yaml(ROOT / "params.yaml")
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
    "zero bytes": ("images.tar", b"", "is an empty file (0 bytes), not a tar archive"),
    "html page": (
        "images.tar",
        b"\n<!DOCTYPE html>\n<html><body>Rate limit exceeded</body></html>",
        "is an HTML page of 62 bytes, not a tar archive (an error or login page saved in its "
        "place?)",
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
    "normalize string": ("train.normalize", "false", "'train.normalize' must be true or false"),
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


# ----------------------------------------------------------------------------- corrupted files

# Files that were once good and then broke: a copy cut short, a disk fault, an editor's save.
# DVC's outputs (models, prepared splits) are restored from DVC's cache by the command the error
# names; the resume state is a cache of our own, ignored and rebuilt; the MLflow store is not
# DVC's, so the line says how to start a new one without deleting the old.
RUN = "cnn-tiny-0"
CHECKPOINT = f"models/{RUN}.pt"
TORCH_CUT = "PytorchStreamReader failed reading zip archive: failed finding central directory"
# A stage that trains one net of this run in seconds, reading tmp_path/data/prepared (16 px).
DRIVER = """
import os, signal, sys
from pathlib import Path
from dogbreeds.common.cli import run_stage
from dogbreeds.params import load_params
from dogbreeds.pipeline import train
from dogbreeds.training import resume

save_state = resume.save_state

def save_and_die(*args, **kwargs):  # the state after epoch 1 is on disk, then SIGKILL
    save_state(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

if os.environ.get("DIE_AFTER_STATE"):
    resume.save_state = save_and_die
out = Path(sys.argv[1])
run_stage(lambda: train.run_training(
    load_params(), "cnn", "tiny", 0, models_dir=out / "models", metrics_dir=out / "metrics"
))
"""


def stage_env(**extra: str) -> dict[str, str]:
    env = {**STAGE_ENV, "OMP_NUM_THREADS": "1", **extra}  # one thread: CPU numbers repeat
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_STAGE"):
        env.pop(name, None)
    return env


def tiny_tree() -> dict:
    return set_keys(
        copy.deepcopy(TREE),
        {
            "model.resolution": 16,
            "model.width_mult": 0.25,
            "train.device": "cpu",
            "train.batch_size": 8,
            "train.amp": "off",
            "train.archs": ["cnn"],
            "train.schedules": {"tiny": {"epochs": [1, 1, 1], "max_lr": [0.01, 0.001, 0.0001]}},
        },
    )


@pytest.fixture
def dvc_repo(prepared: Path, tmp_path: Path) -> Path:
    """tmp_path as a git + DVC repository whose one stage outputs the prepared 16 px splits and
    a trained cnn's checkpoint (made here in-process), both in DVC's cache: files that were
    once good."""
    from dogbreeds.nets.models import build_model
    from dogbreeds.training.checkpoint import save_checkpoint

    made = tmp_path / "made"
    made.mkdir()
    prepared.rename(made / "prepared")
    breeds = TREE["data"]["breeds"]
    meta = {"arch": "cnn", "width_mult": 0.25, "resolution": 16, "deform_backend": "auto",
            "breeds": breeds, "mean": [0.5] * 3, "std": [0.25] * 3}  # fmt: skip
    save_checkpoint(made / f"{RUN}.pt", build_model("cnn", len(breeds), width_mult=0.25), meta)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_tree(), sort_keys=False))
    (tmp_path / "driver.py").write_text(DRIVER)
    stages = {"stages": {"make": {
        "cmd": f"mkdir -p models && cp -r made/prepared data/prepared && cp made/{RUN}.pt models/",
        "deps": ["made"],
        "outs": ["data/prepared", CHECKPOINT],
    }}}  # fmt: skip
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stages))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, env=dvc_env())
    return tmp_path


def dvc_env() -> dict[str, str]:
    return stage_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                     DVC_NO_ANALYTICS="1")  # fmt: skip


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The stage's one `error: ...` line (after its INFO log lines), checked: no traceback."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.splitlines()[-1] == errors[0], proc.stderr
    return errors[0]


def remedy(line: str) -> list[str]:
    """The command between backticks in an error line, e.g. `dvc checkout --force models/x.pt`."""
    return line.split("`")[1].split()


def test_a_truncated_checkpoint_names_the_dvc_checkout_that_restores_it(dvc_repo: Path) -> None:
    model = dvc_repo / CHECKPOINT
    good = model.read_bytes()
    cut_in_half(model)

    proc = stage("evaluate", dvc_repo, "--arch", "cnn", "--schedule", "tiny", "--seed", "0")

    line = one_error_line(proc)
    assert line == (
        f"error: {CHECKPOINT}: truncated or not a dogbreeds checkpoint ({TORCH_CUT}); restore "
        f"DVC's copy with `dvc checkout --force {CHECKPOINT}` (or delete it and run dvc repro)"
    )
    assert not (dvc_repo / "metrics").exists()  # nothing written
    subprocess.run(remedy(line), cwd=dvc_repo, check=True, capture_output=True, env=dvc_env())
    assert model.read_bytes() == good  # the remedy works


def test_a_truncated_prepared_split_names_the_dvc_checkout_that_restores_it(
    dvc_repo: Path,
) -> None:
    split = dvc_repo / "data" / "prepared" / "train.pt"
    good = split.read_bytes()
    cut_in_half(split)

    proc = subprocess.run([sys.executable, "driver.py", "out"], cwd=dvc_repo, env=stage_env(),
                          capture_output=True, text=True)  # fmt: skip

    line = one_error_line(proc)  # torch's reason depends on where the cut falls: (...)
    assert re.fullmatch(
        r"error: data/prepared/train.pt: truncated or not a prepared split \(.+\); restore "
        r"DVC's copy with `dvc checkout --force data/prepared` \(or delete it and run dvc repro\)",
        line,
    ), line
    assert not (dvc_repo / "out").exists() and not (dvc_repo / "mlflow.db").exists()
    subprocess.run(remedy(line), cwd=dvc_repo, check=True, capture_output=True, env=dvc_env())
    assert split.read_bytes() == good


def train_stage(repo: Path, out: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "driver.py", out], cwd=repo, env=stage_env(**env),
                          capture_output=True, text=True)  # fmt: skip


def test_a_resume_state_cut_in_half_trains_from_scratch_to_the_same_weights(
    dvc_repo: Path,
) -> None:
    whole = train_stage(dvc_repo, "whole")
    assert whole.returncode == 0, whole.stderr
    killed = train_stage(dvc_repo, "resumed", DIE_AFTER_STATE="1")
    assert killed.returncode == -signal.SIGKILL
    [state] = (dvc_repo / ".resume").glob(f"{RUN}-*.pt")
    cut_in_half(state)

    proc = train_stage(dvc_repo, "resumed")

    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "resume state" in line]
    assert warnings == [
        f"WARNING dogbreeds.training.resume: {state}: unreadable resume state ({TORCH_CUT}); "
        "training from scratch"
    ]
    assert "resuming after" not in proc.stderr
    weights = [
        torch_load(dvc_repo / run / CHECKPOINT)["state_dict"] for run in ("whole", "resumed")
    ]
    assert all(value.equal(weights[1][key]) for key, value in weights[0].items())  # no wrong number
    assert not (dvc_repo / ".resume").exists()  # the rebuilt state was removed when it finished


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True)


def test_an_mlflow_store_that_is_not_a_database_names_the_file_and_a_way_out(
    dvc_repo: Path,
) -> None:
    first = train_stage(dvc_repo, "first")
    assert first.returncode == 0, first.stderr
    db = (dvc_repo / "mlflow.db").resolve()
    move = f"move it aside (mv {db} {db}.broken) and rerun to start a new store"
    lost = "(the runs it held are lost unless you have a copy)"

    cut_in_half(db)  # a store cut short: SQLite's header is there, its pages are not
    line = one_error_line(train_stage(dvc_repo, "again"))
    assert line == (
        f"error: {db}: a damaged SQLite database (database disk image is malformed); {move} {lost}"
    )

    db.write_text("<html>not a database</html>\n")  # something else saved in its place
    line = one_error_line(train_stage(dvc_repo, "again"))
    assert line == f"error: {db}: not an SQLite database; {move} {lost}"
    assert not (dvc_repo / "again").exists()

    db.rename(f"{db}.broken")  # the remedy
    again = train_stage(dvc_repo, "again")
    assert again.returncode == 0, again.stderr
    assert (dvc_repo / "again" / CHECKPOINT).is_file() and db.is_file()


# ----------------------------------------------------------------------------- round three (47-78)

BREEDS = TREE["data"]["breeds"]


def stanford_raw(root: Path, files_per_breed: int = 3, skip: tuple[str, ...] = ()) -> dict:
    """data/raw/stanford as the download stage leaves it: 3 distinct photos per breed folder."""
    files = {}
    for n, breed in enumerate(BREEDS):
        if breed not in skip:
            for i in range(files_per_breed):
                files[f"{FOLDERS[breed]}/{i}.jpg"] = jpeg(1000 + 10 * n + i)
    for name, data in files.items():
        path = root / "data" / "raw" / "stanford" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def stanford_only(tmp_path: Path, **updates) -> None:
    params = set_keys(copy.deepcopy(TREE), {"data.sources": ["stanford"], **updates})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


PUG = FOLDERS["pug"]
CHIHUAHUA = FOLDERS["chihuahua"]
SHORT = "breed 'pug' has 0 image(s) after merge; train, val and test need 1 each ('split.min_per_breed'), so at least 3. Searched: data/raw/stanford/"


def bad_pug_folder(raw: Path, row: str) -> None:
    """Rows 47-49: the pug folder missing, all unreadable, or all copies of chihuahua photos."""
    folder = raw / "data" / "raw" / "stanford" / PUG
    if row == "missing":
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    elif row == "unreadable":
        for path in folder.iterdir():
            path.write_bytes(b"<html>Not Found</html>")
    else:
        for path, copy_from in zip(
            sorted(folder.iterdir()), sorted((folder.parent / CHIHUAHUA).iterdir()), strict=True
        ):
            path.write_bytes(copy_from.read_bytes())


BREED_ROWS = {  # row: the end of the merge stage's one line
    "missing": f"{SHORT}{PUG} (missing)",
    "unreadable": f"{SHORT}{PUG} (3 files: 3 unreadable)",
    # a label conflict drops every copy: chihuahua, first in label order, is named
    "duplicates": SHORT.replace("'pug'", "'chihuahua'").replace("3. ", "3 (also short: pug). ")
    + f"{CHIHUAHUA} (3 files: 3 also filed as pug)",
}


@pytest.mark.parametrize("row", BREED_ROWS)
def test_a_breed_with_no_images_stops_the_merge_stage(row: str, tmp_path: Path) -> None:
    stanford_raw(tmp_path)
    bad_pug_folder(tmp_path, row)
    stanford_only(tmp_path)

    line = one_error_line(stage("merge", tmp_path))

    assert line == f"error: {BREED_ROWS[row]}"
    assert not (tmp_path / "data" / "merged").exists()


def test_a_breed_missing_from_the_manifest_stops_the_split_stage(tmp_path: Path) -> None:
    """Row 51: a manifest made before this check (or by hand) that lacks a breed entirely."""
    rows = [
        {"id": f"{n}{i}", "breed": b, "label": n, "source": "stanford", "path": f"{b}/{i}.jpg",
         "sha256": "0" * 64, "width": 48, "height": 48}
        for n, b in enumerate(BREEDS) if b != "pug" for i in range(8)
    ]  # fmt: skip
    (tmp_path / "data" / "merged").mkdir(parents=True)
    with open(tmp_path / "data" / "merged" / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stanford_only(tmp_path)

    line = one_error_line(stage("split", tmp_path))

    assert line == (
        "error: breed 'pug' has 0 image(s) after merge; a stratified train/val/test split needs "
        "at least 3 per breed ('split.min_per_breed' 1 in each; see data/merged/rejected.csv and "
        "the source's 'data.<source>.folders')"
    )
    assert not (tmp_path / "data" / "split").exists()


def test_a_breed_short_in_one_set_after_the_split_names_the_fraction_to_raise() -> None:
    """Row 51's sequel: enough images in all, but the split leaves a breed short in val."""
    import pandas as pd

    from dogbreeds.data.split import SplitError, assign_splits

    manifest = pd.DataFrame(
        [{"id": f"{n}{i}", "breed": b, "label": n} for n, b in enumerate(BREEDS) for i in range(8)]
    )
    tree = set_keys(copy.deepcopy(TREE), {"split.min_per_breed": 2, "split.val": 0.15})
    with pytest.raises(SplitError) as error:
        assign_splits(manifest, parse_params(tree).split, BREEDS)
    assert str(error.value) == (
        "breed 'bernese_mountain_dog' gets 1 image(s) in val, fewer than 'split.min_per_breed' "
        "2; raise split.val (now 0.15), or add images of it"
    )


class PageHandler(http.server.BaseHTTPRequestHandler):
    """Answers 200 with `body` for any path, as a server behind a login or a rate limit does."""

    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def page_server(monkeypatch: pytest.MonkeyPatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/images.tar"
    httpd.shutdown()
    httpd.server_close()


PAGE = b"<!DOCTYPE html><html><body>Please sign in</body></html>"


def test_an_html_page_served_as_the_archive_is_never_cached(
    page_server: str, tmp_path: Path
) -> None:
    """Row 52: 200 with an HTML page; the page is deleted, and once the server sends the archive
    the next run uses it."""
    downloads = tmp_path / "downloads"
    PageHandler.body = PAGE
    with pytest.raises(SourceError) as error:
        fetch_source("stanford", source(page_server), tmp_path / "a", downloads)
    assert str(error.value) == (
        f"params: 'data.stanford.url': {page_server} sent an HTML page of 55 bytes, not a tar "
        "archive (an error or login page saved in its place?); the download was deleted (run "
        "again once the server sends the archive)"
    )
    assert list(downloads.iterdir()) == []

    PageHandler.body = TAR  # the server is fixed
    assert fetch_source("stanford", source(page_server), tmp_path / "b", downloads) == 10


def test_a_page_cached_by_an_older_version_is_fetched_again(
    page_server: str, tmp_path: Path, caplog
) -> None:
    """Row 53: the poisoned cache of earlier versions is recognised and replaced."""
    from dogbreeds.data.sources import download_path

    cached = download_path(page_server, tmp_path / "downloads", "stanford")
    cached.parent.mkdir()
    cached.write_bytes(PAGE)
    PageHandler.body = TAR

    assert (
        fetch_source("stanford", source(page_server), tmp_path / "a", tmp_path / "downloads") == 10
    )
    assert cached.read_bytes() == TAR
    assert "downloaded earlier is an HTML page of 55 bytes, not a tar archive" in caplog.text


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


LOCAL = {  # row: (what the url names, given tmp_path; the line after "params: 'data.stanford.url': ")
    "zip named .tar": (
        lambda tmp: tmp / "images.tar",
        "{path} is a zip archive of {size}, not a tar archive; name it .zip to use it as one",
    ),
    "fifo": (
        lambda tmp: fifo(tmp / "images.tar"),
        "{path} is a FIFO (named pipe), not an archive file or a directory",
    ),
    "dev zero": (
        lambda tmp: Path("/dev/zero"),
        "{path} is a character device, not an archive file or a directory",
    ),
    "png named .tar": (
        lambda tmp: tmp / "images.tar",
        "{path} is a PNG image of {size}, not a tar archive",
    ),
}


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(row, marks=pytest.mark.skipif(
            sys.platform == "win32" and row in ("fifo", "dev zero"), reason="no FIFOs, no /dev"
        ))
        for row in LOCAL
    ],
)  # fmt: skip
def test_a_local_source_is_judged_by_its_type_and_first_bytes(
    row: str, tmp_path: Path, monkeypatch
) -> None:
    """Rows 54-57: nothing is hashed or opened for reading before its kind is known (a FIFO
    or /dev/zero would block or run forever)."""
    from dogbreeds.data import sources

    make, message = LOCAL[row]
    path = make(tmp_path)
    if row == "zip named .tar":
        path.write_bytes(zip_bytes(stanford_files()))
    elif row == "png named .tar":
        path.write_bytes(encode(photo(3), "PNG"))
    monkeypatch.setattr(sources, "sha256_of", lambda p: pytest.fail(f"{p} was hashed"))
    size = sources.amount(path.stat().st_size) if path.is_file() else ""
    prefix = (
        "data.stanford: "
        if row in ("zip named .tar", "png named .tar")
        else "params: 'data.stanford.url': "
    )

    with pytest.raises(SourceError) as error:
        fetch_source(
            "stanford",
            source(path.as_uri() if row == "dev zero" else path),
            tmp_path / "o",
            tmp_path / "d",
        )

    assert str(error.value) == prefix + message.format(path=path, size=size)


def tar_of(path: Path, members: list[tuple[str, bytes]], mode: str = "w", **options) -> Path:
    with tarfile.open(path, mode, **options) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


GOOD = f"Images/{CHIHUAHUA}/good.jpg"
BIG = 3 << 20  # zeros: a bomb at any ratio cap, past the 1 MiB slack


def budget_source(tmp_path: Path, row: str) -> Path:
    if row == "member too large":
        return tar_of(
            tmp_path / "images.tar",
            [(GOOD, GOOD_JPEG), (f"Images/{CHIHUAHUA}/big.jpg", os.urandom(20_000))],
        )
    if row == "zip bomb member":
        archive = tmp_path / "images.zip"
        archive.write_bytes(
            zip_bytes({GOOD: GOOD_JPEG, f"Images/{CHIHUAHUA}/bomb.jpg": bytes(BIG)})
        )
        return archive
    if row == "tar.gz bomb":
        return tar_of(
            tmp_path / "images.tar.gz",
            [(GOOD, GOOD_JPEG), (f"Images/{CHIHUAHUA}/bomb.jpg", bytes(BIG))],
            "w:gz",
        )
    return tar_of(
        tmp_path / "images.tar",
        [(GOOD, GOOD_JPEG), (f"Images/{CHIHUAHUA}/more.jpg", os.urandom(20_000))],
    )


BUDGET = {  # row: (data.extract, the skip reason of the member, or the stage's line)
    "member too large": ({"max_member_mib": 0.01}, "too_large: over 0.01 MiB (data.extract.max_member_mib)"),
    "zip bomb member": ({}, "compression_ratio: expands over 100-fold (data.extract.max_ratio)"),
    "tar.gz bomb": ({}, "error: data.stanford: {archive} expands over 100-fold ('data.extract.max_ratio') by Images/n02085620-Chihuahua/bomb.jpg: a decompression bomb, not a photo archive (nothing was kept)"),
    "total too large": ({"max_total_mib": 0.01}, "error: data.stanford: the sources would write more than 0.01 MiB ('data.extract.max_total_mib'); stopped before Images/n02085620-Chihuahua/more.jpg (nothing was kept; raise the cap if the data really are that big)"),
}  # fmt: skip


@pytest.mark.parametrize("row", BUDGET)
def test_extraction_stays_within_its_budget(row: str, tmp_path: Path) -> None:
    """Rows 58-61: caps checked while streaming; a bad member is skipped unwritten, a bad
    archive stops the stage with nothing kept."""
    caps, expected = BUDGET[row]
    archive = budget_source(tmp_path, row)
    stanford_only(tmp_path, **{"data.stanford.url": str(archive), "data.stanford.sha256": ""},
                  **{f"data.extract.{k}": v for k, v in caps.items()})  # fmt: skip

    proc = stage("download", tmp_path)

    if expected.startswith("error: "):
        assert one_error_line(proc) == expected.format(archive=archive)
        assert not (tmp_path / "data" / "raw").exists()
        return
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "data" / "raw" / "stanford"
    with open(out / "skipped.csv", newline="") as f:
        skipped = {r["member"]: r["reason"] for r in csv.DictReader(f)}
    assert list(skipped.values()) == [expected]
    assert sorted(p.name for p in (out / CHIHUAHUA).iterdir()) == ["good.jpg"]


def test_a_member_name_that_is_not_utf8_is_decoded_and_listed(tmp_path: Path) -> None:
    """Row 62: an old Windows tar's latin-1 `café.jpg` is written as café.jpg (valid UTF-8,
    which DVC and the csv files can hold) and listed in renamed.csv; merge reads it."""
    archive = tar_of(tmp_path / "images.tar", [(f"Images/{CHIHUAHUA}/café.jpg", GOOD_JPEG)],
                     format=tarfile.GNU_FORMAT, encoding="latin-1")  # fmt: skip
    out = tmp_path / "raw" / "stanford"

    fetch_source("stanford", source(archive), out, tmp_path / "dl")

    assert [p.name for p in (out / CHIHUAHUA).iterdir()] == ["café.jpg"]
    with open(out / "renamed.csv", newline="") as f:
        assert list(csv.DictReader(f)) == [
            {
                "member": f"Images/{CHIHUAHUA}/caf\\xe9.jpg",
                "written_as": f"Images/{CHIHUAHUA}/café.jpg",
            }
        ]
    assert (out / "skipped.csv").read_text() == "member,reason\n"


def test_an_over_long_member_name_is_skipped_and_the_rest_extracted(tmp_path: Path) -> None:
    """Row 63: it once stopped the download as 'not a readable archive', naming a temporary."""
    long_name = f"Images/{CHIHUAHUA}/{'x' * 300}.jpg"
    archive = tar_of(tmp_path / "images.tar", [(long_name, GOOD_JPEG), (GOOD, GOOD_JPEG)])
    out = tmp_path / "raw" / "stanford"

    assert fetch_source("stanford", source(archive), out, tmp_path / "dl") == 1

    with open(out / "skipped.csv", newline="") as f:
        assert {r["member"]: r["reason"] for r in csv.DictReader(f)} == {
            long_name: "name_too_long: over 255 bytes"
        }


def test_the_last_copy_of_a_repeated_member_name_wins(tmp_path: Path) -> None:
    """Row 64: as `tar x` does; the earlier copy is listed."""
    archive = tar_of(tmp_path / "images.tar", [(GOOD, b"first"), (GOOD, GOOD_JPEG)])
    out = tmp_path / "raw" / "stanford"

    assert fetch_source("stanford", source(archive), out, tmp_path / "dl") == 1

    assert (out / CHIHUAHUA / "good.jpg").read_bytes() == GOOD_JPEG
    with open(out / "skipped.csv", newline="") as f:
        assert list(csv.DictReader(f)) == [
            {
                "member": GOOD,
                "reason": "duplicate_name: replaced by a later member of the same name",
            }
        ]


def test_an_unreadable_file_or_folder_of_a_directory_source_is_named(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """Rows 65-66: no PermissionError traceback. As root, chmod 000 stops nothing, so the
    denial is injected where the OS would raise it (os.open, os.scandir)."""
    tree = tmp_path / "dbi-copy"
    for name, data in {f"{CHIHUAHUA}/a.jpg": GOOD_JPEG, f"{CHIHUAHUA}/secret.jpg": GOOD_JPEG,
                       f"{PUG}/b.jpg": GOOD_JPEG}.items():  # fmt: skip
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    real_open, real_scandir = os.open, os.scandir

    def denied_open(path, *args, **kwargs):
        if str(path).endswith("secret.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    def denied_scandir(path="."):
        if str(path).endswith(PUG):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "open", denied_open)
    monkeypatch.setattr(os, "scandir", denied_scandir)
    out = tmp_path / "raw" / "stanford"

    assert fetch_source("stanford", source(tree), out, tmp_path / "dl") == 1

    with open(out / "skipped.csv", newline="") as f:
        assert {r["member"]: r["reason"] for r in csv.DictReader(f)} == {
            f"{CHIHUAHUA}/secret.jpg": "unreadable: Permission denied",
            PUG: "unreadable_folder: Permission denied",
        }
    assert (
        f"folder {PUG} is unreadable (Permission denied); its breed gets no images here"
        in caplog.text
    )


PARAMS_ROUND_THREE = {  # row: (updates, the line's end) — rows 67-72
    "synthetic seed -1": ({"data.synthetic.seed": -1}, "'data.synthetic.seed' must be >= 0, got -1"),
    "split seed -1": ({"split.seed": -1}, "'split.seed' must be >= 0, got -1"),
    "scale reversed": ({"deform.affine.scale": [1.15, 0.85]}, "'deform.affine.scale' must be [low, high] with 0 < low <= high, got [1.15, 0.85]"),
    "batch 1 at 1x1": ({"train.batch_size": 1, "model.resolution": 16}, "'train.batch_size' 1 at 'model.resolution' 16 gives BatchNorm one value per channel (the last feature map is 1x1); use a batch of 2 or more, or a resolution of 17 or more"),
    "pct_start 1": ({"train.one_cycle.pct_start": 1.0}, "'train.one_cycle.pct_start' must be < 1, got 1.0"),
    "sigma 0": ({"deform.elastic.sigma": 0}, "'deform.elastic.sigma' must be > 0, got 0"),
    "two breeds one folder": ({"data.dbi.folders.golden_retriever": "labrador"}, "'data.dbi.folders' maps two breeds to the folder 'labrador' (golden_retriever, labrador_retriever); each breed needs a folder of its own"),
}  # fmt: skip


@pytest.mark.parametrize("row", PARAMS_ROUND_THREE)
def test_params_that_once_crashed_later_are_refused_first(row: str, tmp_path: Path) -> None:
    updates, message = PARAMS_ROUND_THREE[row]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(set_keys(copy.deepcopy(TREE), updates)))

    line = one_error_line(stage("split", tmp_path))  # any stage: all read the whole file

    assert line == f"error: params.yaml: params: {message}"


def tiff(pixels: np.ndarray, mode: str) -> bytes:
    return encode(Image.fromarray(pixels, mode), "TIFF")


RAMP = np.linspace(0, 1, 48 * 36).reshape(36, 48)
IMAGES_ROUND_THREE = {  # row: (bytes, None when usable, else the rejection reason) — rows 73-75
    "float tiff in [0, 1]": (tiff(RAMP.astype(np.float32), "F"), None),
    "float tiff, other range": (tiff((RAMP * 1000 - 5).astype(np.float32), "F"), "float pixels from -5 to 995: neither [0, 1] nor [0, 255], no known scale"),
    "int32 tiff beyond 16 bits": (tiff((RAMP * (2**31 - 1)).astype(np.int32), "I"), "32-bit integer pixels up to 2147483647: beyond 16 bits, no known scale"),
}  # fmt: skip


@pytest.mark.parametrize("row", IMAGES_ROUND_THREE)
def test_images_of_float_and_32_bit_pixels(row: str) -> None:
    data, reason = IMAGES_ROUND_THREE[row]
    if reason is not None:
        with pytest.raises(UnreadableImage) as error:
            decode_rgb(data)
        assert str(error.value) == reason
        return
    pixels = np.asarray(decode_rgb(data)).astype(int)
    assert pixels.min() == 0 and pixels.max() == 255 and 120 < pixels.mean() < 135  # the ramp


def test_thumbnails_and_strips_are_rejected_and_listed(tmp_path: Path) -> None:
    """Rows 76-77: 1x1 and 20000x1 were kept as training photos."""
    stanford_raw(tmp_path)
    folder = tmp_path / "data" / "raw" / "stanford" / PUG
    (folder / "dot.png").write_bytes(encode(Image.new("RGB", (1, 1), (90, 40, 10)), "PNG"))
    (folder / "line.png").write_bytes(encode(Image.new("RGB", (20_000, 1), (90, 40, 10)), "PNG"))
    (folder / "strip.png").write_bytes(encode(photo(40, size=(400, 50)), "PNG"))
    stanford_only(tmp_path)

    proc = stage("merge", tmp_path)

    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "data" / "merged" / "rejected.csv", newline="") as f:
        rejected = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
    assert rejected == {
        "dot.png": "too_small: 1x1, a side under 32 px (merge.min_side)",
        "line.png": "too_small: 20000x1, a side under 32 px (merge.min_side)",
        "strip.png": "too_elongated: 400x50, 8 times longer than wide (merge.max_aspect 4)",
    }
