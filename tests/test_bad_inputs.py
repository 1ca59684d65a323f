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
import io
import os
import re
import signal
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
