"""Tiny generated images and archives for the data tests (no network, no real datasets).

`photo(seed)` makes a small image whose perceptual hash is unrelated to any other seed's, so
only the duplicates a test builds on purpose look alike. The layouts mimic the two real
archives: Stanford's `Images/<wnid>-<Breed>/<file>.jpg` and DBI's
`dog-breed-images/<breed>/<file>.jpg`, each with an extra breed the study does not use.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from dogbreeds.commands import preset
from dogbreeds.common.dotted import set_keys
from dogbreeds.params import Params, parse_params, read_yaml

ROOT = Path(__file__).resolve().parents[1]

STANFORD_CHIHUAHUA = "n02085620-Chihuahua"
STANFORD_PUG = "n02110958-pug"
STANFORD_OTHER = "n02088364-beagle"  # in the full archive, not in the study


def params_with(**updates) -> Params:
    """The project's params.yaml with dotted keys set, e.g. params_with(**{"split.seed": 1})."""
    return parse_params(set_keys(read_yaml(ROOT / "params.yaml"), updates))


def photo(seed: int, size: tuple[int, int] = (48, 36), mode: str = "RGB") -> Image.Image:
    """A random smooth colour field with a bright blob: distinct for every seed."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))
    image = field.resize(size, Image.Resampling.BICUBIC)
    x, y = int(rng.integers(0, size[0] // 2)), int(rng.integers(0, size[1] // 2))
    image.paste((255, 255, 255), (x, y, x + size[0] // 4, y + size[1] // 4))
    return image.convert(mode)


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (48, 36)) -> bytes:
    return encode(photo(seed, size), "JPEG", quality=95)


def rotated_jpeg(seed: int) -> bytes:
    """A landscape JPEG whose EXIF says 'rotate 90°': upright it is portrait (36 x 48)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    return encode(photo(seed, (48, 36)), "JPEG", quality=95, exif=exif)


def breed_files(prefix: str, breed_a: str, breed_b: str, other: str, base: int) -> dict[str, bytes]:
    """Good images in two breed folders plus the junk a real archive may hold.

    Returns member name -> bytes; `base` offsets the photo seeds so two sources differ.
    """
    a, b, o = f"{prefix}{breed_a}", f"{prefix}{breed_b}", f"{prefix}{other}"
    good = jpeg(base + 1)
    return {
        f"{a}/good1.jpg": good,
        f"{a}/good2.jpg": jpeg(base + 2),
        f"{a}/copy_of_good1.jpg": good,  # exact duplicate
        f"{a}/good1_small.jpg": encode(photo(base + 1).resize((24, 18)), "JPEG", quality=70),
        f"{a}/truncated.jpg": good[: len(good) // 2],
        f"{a}/empty.jpg": b"",
        f"{a}/notes.jpg": b"this is not an image",
        f"{b}/really_png.jpg": encode(photo(base + 3), "PNG"),
        f"{b}/grey.jpg": encode(photo(base + 4, mode="L"), "JPEG"),
        f"{b}/good5.jpg": jpeg(base + 5),
        f"{o}/other.jpg": jpeg(base + 6),
    }


def stanford_files() -> dict[str, bytes]:
    return breed_files("Images/", STANFORD_CHIHUAHUA, STANFORD_PUG, STANFORD_OTHER, base=100)


def dbi_files() -> dict[str, bytes]:
    return breed_files("dog-breed-images/", "chihuahua", "pug", "corgi", base=200)


def write_tar(path: Path, files: dict[str, bytes], hostile: bool = True) -> Path:
    """A tar (compression from the suffix) of `files`, plus escaping and special members."""
    mode = {".gz": "w:gz", ".tgz": "w:gz", ".bz2": "w:bz2", ".xz": "w:xz"}.get(path.suffix, "w")
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if hostile:
            for name, data in {"../evil.jpg": b"x", "/tmp/abs_evil.jpg": b"x"}.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            folder = next(iter(files)).rsplit("/", 1)[0]
            specials = {
                f"{folder}/link.jpg": (tarfile.SYMTYPE, "/etc/passwd"),
                f"{folder}/hard.jpg": (tarfile.LNKTYPE, "/etc/passwd"),
                f"{folder}/tty.jpg": (tarfile.CHRTYPE, ""),
                f"{folder}/pipe.jpg": (tarfile.FIFOTYPE, ""),
            }
            for name, (kind, target) in specials.items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, target
                tar.addfile(info)
    return path


def write_zip(path: Path, files: dict[str, bytes], hostile: bool = True) -> Path:
    """A zip of `files`, plus escaping members, a symlink entry and macOS metadata."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        if hostile:
            zf.writestr("../evil.jpg", b"x")
            zf.writestr("/tmp/abs_evil.jpg", b"x")
            folder = next(iter(files)).rsplit("/", 1)[0]
            link = zipfile.ZipInfo(f"{folder}/link.jpg")
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(link, "/etc/passwd")
            zf.writestr(f"__MACOSX/{folder}/._good1.jpg", b"\x00\x05\x16\x07")
    return path


def hostile_reasons(files: dict[str, bytes], kind: str) -> dict[str, str]:
    """The skip reasons the hostile members of write_tar / write_zip must get."""
    folder = next(iter(files)).rsplit("/", 1)[0]
    reasons = {"../evil.jpg": "parent_reference", "/tmp/abs_evil.jpg": "absolute_path"}
    reasons[f"{folder}/link.jpg"] = "symlink"
    if kind == "tar":
        reasons |= {
            f"{folder}/hard.jpg": "hardlink",
            f"{folder}/tty.jpg": "device",
            f"{folder}/pipe.jpg": "not_regular_file",
        }
    else:
        reasons[f"__MACOSX/{folder}/._good1.jpg"] = "hidden_file"
    return reasons


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write member name -> bytes as real files under root (a raw dir or a local source)."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def tiny_params(**updates) -> Params:
    """The unit tests' params: the tiny preset's training (CPU, one epoch per one-cycle stage)
    as one schedule named "tiny", at 16 px (the `prepared` fixture's images) with a narrow net
    and 8-image fp32 batches (the same on every CPU), on the committed data sources and seeds;
    dotted keys override."""
    tiny = preset.apply(read_yaml(ROOT / "params.yaml"), "tiny")["train"]
    tree = read_yaml(ROOT / "params.yaml")
    tree["model"].update(resolution=16, width_mult=0.25)
    schedules = {"tiny": next(iter(tiny["schedules"].values()))}
    tree["train"].update(device=tiny["device"], batch_size=8, amp="off", schedules=schedules)
    return parse_params(set_keys(tree, updates))
