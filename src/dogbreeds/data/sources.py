"""Download stage: fetch each source, verify its sha256 and extract only its breed folders.

(Over 400 lines for a reason: the safety rules of extraction, the three archive kinds and the
download/verify/resume logic are one trust boundary, reviewed together.)

For each name in `data.sources` the stage writes `data/raw/<source>/<folder>/<file>`:

* `synthetic` is generated (see `dogbreeds.data.synthetic`);
* `stanford` and `dbi` come from `data.<source>.url`: an http(s) URL (downloaded, resumable,
  into `<root>/data/downloads/<hash of the URL>-<file name>`, which is not a DVC output so a
  partial download survives a failed run), a `file://` URL, a local archive, a local directory,
  or for Kaggle `kaggle://owner/name`, pinned as `kaggle://owner/name/versions/N`.

`<root>` is the main repository (`common.fs.repo_root`), and relative paths resolve against it
too: under `dvc exp run --temp` and `dvc queue` a stage runs in a temporary copy that holds no
git-ignored files and is deleted afterwards.

`data.<source>.sha256` pins a source: the sha256 of an archive's bytes, or for a directory
(a local one, or what Kaggle downloads) the tree hash of its breed folders (`tree_sha256`).

Archives are never extracted wholesale. Each member is checked by `RawWriter.place`: only
regular files whose parent folder is one of the source's breed folders (at any depth) are
written, by their base name, so nothing can land outside `data/raw/<source>/`. Everything
else is listed with a reason in `data/raw/<source>/skipped.csv`.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO
from urllib.parse import urlparse
from urllib.request import url2pathname

from tqdm import tqdm

from dogbreeds import DogbreedsError
from dogbreeds.common.fs import atomic_path, repo_root
from dogbreeds.common.redact import redact
from dogbreeds.data.synthetic import write_synthetic
from dogbreeds.params import DataParams, SourceParams

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read when downloading, hashing and copying
KAGGLE_PAGE = "https://www.kaggle.com/datasets/{handle}"
# kaggle://owner/dataset, optionally pinned to one version: kaggle://owner/dataset/versions/3
KAGGLE_URL = re.compile(r"^kaggle://([\w.-]+)/([\w.-]+)(?:/versions/(\d+))?/?$")
# What reading one member can raise when only that member is damaged (bad CRC, encrypted, ...).
MEMBER_READ_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    zipfile.BadZipFile,
    RuntimeError,
    NotImplementedError,
)


class SourceError(DogbreedsError):
    """A source cannot be fetched, verified or extracted; the message names the param."""


# ---------------------------------------------------------------------------------------------
# Where a member goes: data/raw/<source>/<folder>/<basename>, or why it is skipped
# ---------------------------------------------------------------------------------------------


def member_problem(name: str) -> str | None:
    """Why a member name is unsafe to use at all (None when it is a plain relative path)."""
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
        return "absolute_path"
    if ".." in normalized.split("/"):
        return "parent_reference"
    return None


def classify(member: str, folders: set[str]) -> tuple[str, str] | str:
    """(folder, basename) for a member to keep, else the reason to skip it."""
    if problem := member_problem(member):
        return problem
    parts = [p for p in member.replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) < 2 or parts[-2] not in folders:
        return "other_folder"
    if parts[-1].startswith("."):
        return "hidden_file"  # e.g. macOS `._name.jpg` resource forks
    return parts[-2], parts[-1]


class RawWriter:
    """Writes accepted members of one source into its raw folder and records every skip.

    A member is accepted when its name is safe, its parent folder is one of `folders` and its
    base name is an ordinary file name; it is written as `<out_dir>/<folder>/<basename>`, a
    path built from two vetted components, so it cannot escape `out_dir`.
    """

    def __init__(self, out_dir: Path, folders: set[str]) -> None:
        self.out_dir = out_dir
        self.folders = folders
        self.written: Counter[str] = Counter()  # folder -> files written
        self.skipped: list[tuple[str, str]] = []  # (member, reason)

    def skip(self, member: str, reason: str) -> None:
        self.skipped.append((member, reason))

    def place(self, member: str) -> Path | None:
        """The destination for a regular-file member, or None (and the skip recorded)."""
        kept = classify(member, self.folders)
        if isinstance(kept, str):
            self.skip(member, kept)
            return None
        target = self.out_dir / kept[0] / kept[1]
        if target.exists():
            self.skip(member, "duplicate_name")  # the same folder name at two depths
            return None
        return target

    def write(self, member: str, open_member: Callable[[], IO[bytes]]) -> None:
        """Copy a regular file's bytes to its destination, if it has one.

        `open_member` is only called for accepted members, so skipped ones are never read.
        A member that fails to read (bad CRC, encrypted) is skipped, not half-written.
        """
        target = self.place(member)
        if target is None:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open_member() as stream, open(target, "wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
        except MEMBER_READ_ERRORS as exc:
            target.unlink(missing_ok=True)
            self.skip(member, f"corrupt_member: {exc}")
            return
        self.written[target.parent.name] += 1

    def finish(self, source: str) -> int:
        """Write skipped.csv, log what happened and return the number of files written."""
        with open(self.out_dir / "skipped.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["member", "reason"])
            writer.writerows(sorted(self.skipped))
        missing = sorted(self.folders - set(self.written))
        if len(missing) == len(self.folders):
            raise SourceError(
                f"data.{source}: none of the folders of 'data.{source}.folders' "
                f"({', '.join(sorted(self.folders))}) was found; check the url and the folder names"
            )
        for folder in missing:
            log.warning("%s: folder %s not found; its breed gets no images here", source, folder)
        reasons = Counter(reason.split(":")[0] for _, reason in self.skipped)
        log.info(
            "%s: wrote %d files in %d folders; skipped %d (%s)",
            source,
            sum(self.written.values()),
            len(self.written),
            len(self.skipped),
            ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())) or "none",
        )
        return sum(self.written.values())


# ---------------------------------------------------------------------------------------------
# Extraction, dispatched by archive type
# ---------------------------------------------------------------------------------------------


def extract_tar(archive: Path, writer: RawWriter) -> None:
    """Stream a (possibly compressed) tar; links and devices are skipped, never created."""
    with tarfile.open(archive, "r:*") as tar:
        for member in tqdm(tar, desc=f"extract {archive.name}", unit="file", leave=False):
            if member.isdir():
                continue  # directories are implied by the files written
            if problem := member_problem(member.name):
                writer.skip(member.name, problem)
            elif member.issym():
                writer.skip(member.name, "symlink")
            elif member.islnk():
                writer.skip(member.name, "hardlink")
            elif member.ischr() or member.isblk():
                writer.skip(member.name, "device")
            elif not member.isfile():
                writer.skip(member.name, "not_regular_file")
            else:
                writer.write(member.name, partial(tar.extractfile, member))


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    """Why a zip entry is not a regular file, from the Unix mode zip stores (None if it is)."""
    mode = info.external_attr >> 16
    if stat.S_IFMT(mode) == 0 or stat.S_ISREG(mode):
        return None  # no Unix mode recorded (e.g. made on Windows), or a regular file
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "not_regular_file"


def extract_zip(archive: Path, writer: RawWriter) -> None:
    """Read a zip entry by entry; symlink entries (Unix mode in the zip) are skipped."""
    with zipfile.ZipFile(archive) as zf:
        for info in tqdm(zf.infolist(), desc=f"extract {archive.name}", unit="file", leave=False):
            if info.is_dir():
                continue
            if problem := member_problem(info.filename) or _zip_kind(info):
                writer.skip(info.filename, problem)
            else:
                writer.write(info.filename, partial(zf.open, info))


ARCHIVE_TYPES: dict[str, Callable[[Path, RawWriter], None]] = {
    ".tar": extract_tar,
    ".tar.gz": extract_tar,
    ".tgz": extract_tar,
    ".tar.bz2": extract_tar,
    ".tar.xz": extract_tar,
    ".zip": extract_zip,
}


def archive_type(path: Path, key: str) -> str:
    """The ARCHIVE_TYPES suffix of `path`; an error lists the known types otherwise."""
    name = path.name.lower()
    for suffix in sorted(ARCHIVE_TYPES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise SourceError(
        f"params: '{key}' is {path}: unknown archive type '{''.join(path.suffixes) or path.name}'; "
        f"known: {', '.join(ARCHIVE_TYPES)} or a directory"
    )


def copy_directory(root: Path, writer: RawWriter) -> None:
    """Copy a local directory's breed folders, with the same rules as an archive."""
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow directory links
        here = Path(dirpath)
        dirnames.sort()
        for name in [d for d in dirnames if (here / d).is_symlink()]:
            writer.skip((here / name).relative_to(root).as_posix(), "symlink")
        for name in sorted(filenames):
            path = here / name
            member = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                writer.skip(member, "symlink")
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                writer.skip(member, "device")
            elif not stat.S_ISREG(mode):
                writer.skip(member, "not_regular_file")
            else:
                writer.write(member, partial(open, path, "rb"))


# ---------------------------------------------------------------------------------------------
# Fetching and verifying
# ---------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(root: Path, folders: set[str]) -> str:
    """The content hash of a directory source: what `copy_directory` would take from it.

    sha256 over the sorted lines `<relative path> <sha256 of the file>` of every regular file
    that sits in one of the breed folders (at any depth, by the same rules as extraction).
    Files elsewhere do not count, so a dataset that adds a breed the study does not use keeps
    its hash; a changed, added or removed image in a used breed changes it.
    """
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            member = path.relative_to(root).as_posix()
            if stat.S_ISREG(path.lstat().st_mode) and not isinstance(
                classify(member, folders), str
            ):
                lines.append(f"{member} {sha256_of(path)}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def download_path(url: str, downloads_dir: Path, name: str) -> Path:
    """Where `url` is cached: one file per URL, keyed by a hash of the whole URL.

    Two URLs ending in the same file name (`.../v1/images.tar`, `.../v2/images.tar`) never
    share a cache entry, even when neither has a sha256 to tell them apart.
    """
    filename = Path(urlparse(url).path).name or f"{name}.download"
    return downloads_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{filename}"


def http_download(url: str, dest: Path, key: str) -> Path:
    """Download `url` to `dest`, resuming from `dest.part` when an earlier run was cut off.

    The bytes go to `<dest>.part` and are renamed to `dest` only once complete, so `dest`
    existing means a finished download. A server that ignores Range restarts from zero.
    """
    if dest.exists():
        log.info("%s: using %s downloaded earlier", key, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range starts at the end: the .part is complete
            os.replace(part, dest)
            return dest
        raise SourceError(
            f"params: '{key}': download of {url} failed: HTTP {exc.code} {exc.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(f"params: '{key}': cannot reach {url}: {exc}") from None
    with response:
        resumed = offset > 0 and response.status == 206
        if offset and not resumed:
            log.info("%s: the server ignores Range; restarting the download", key)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        if resumed:
            log.info("%s: resuming %s at %d bytes", key, dest.name, offset)
        try:
            with (
                open(part, "ab" if resumed else "wb") as out,
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name) as bar,
            ):
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
            raise SourceError(
                f"params: '{key}': download of {url} interrupted ({exc}); "
                f"{part} is kept, run again to resume"
            ) from None
    if total is not None and part.stat().st_size != total:
        raise SourceError(
            f"params: '{key}': download of {url} ended at {part.stat().st_size} of {total} bytes; "
            f"{part} is kept, run again to resume"
        )
    os.replace(part, dest)
    return dest


def kaggle_handle(url: str, key: str) -> str:
    """kaggle://owner/dataset[/versions/N] -> kagglehub's handle, warning when it is unpinned."""
    match = KAGGLE_URL.match(url)
    if not match:
        raise SourceError(
            f"params: '{key}' is {url!r}; a Kaggle source is kaggle://owner/dataset or "
            "kaggle://owner/dataset/versions/N"
        )
    owner, dataset, version = match.groups()
    if version is None:
        log.warning(
            "%s: %s names no version, so an upstream update changes the data silently; pin it "
            "as kaggle://%s/%s/versions/N or with the tree hash in data.<source>.sha256",
            key, url, owner, dataset,
        )  # fmt: skip
        return f"{owner}/{dataset}"
    return f"{owner}/{dataset}/versions/{version}"


def kaggle_download(url: str, key: str) -> Path:
    """Download a Kaggle dataset with kagglehub; any failure becomes the manual steps."""
    handle = kaggle_handle(url, key)
    dataset = handle.split("/versions/")[0]
    try:
        import kagglehub

        return Path(kagglehub.dataset_download(handle))
    except Exception as exc:  # no network, no credentials, renamed dataset...: same advice
        detail = redact(" ".join(f"{type(exc).__name__}: {exc}".split()))
        page = KAGGLE_PAGE.format(handle=dataset)
        example = f"data/downloads/{dataset.split('/')[-1]}.zip"
        raise SourceError(
            f"params: '{key}': Kaggle download of {handle} failed ({detail}). Manual steps: "
            f"open {page}, click Download, save the zip (e.g. as {example}) and set {key} "
            f"to that path, e.g. dvc exp run -S {key}={example}"
        ) from None


def resolve(name: str, source: SourceParams, downloads_dir: Path) -> Path:
    """Turn data.<name>.url into a local archive file or directory, downloading if needed.

    Relative paths are relative to the main repository (`repo_root`), not the working
    directory, so a stage run in DVC's temporary copy finds the same files.
    """
    key, url = f"data.{name}.url", source.url
    parsed = urlparse(url)
    # A one-letter "scheme" is a Windows drive ("C:\\data"), i.e. a local path.
    scheme = parsed.scheme.lower() if len(parsed.scheme) > 1 else ""
    if scheme in ("http", "https"):
        return http_download(url, download_path(url, downloads_dir, name), key)
    if scheme == "kaggle":
        return kaggle_download(url, key)
    if scheme == "file":
        path = Path(url2pathname(parsed.path))
    elif scheme == "":
        path = Path(url)
        if not path.is_absolute():
            path = repo_root() / path
    else:
        raise SourceError(
            f"params: '{key}' has unknown scheme '{scheme}'; "
            "known: http://, https://, file://, kaggle://owner/dataset, or a local path"
        )
    if not path.exists():
        raise SourceError(f"params: '{key}': {path} does not exist")
    return path


def verify(name: str, source: SourceParams, path: Path, downloads_dir: Path) -> None:
    """Check the pin before anything is extracted; a bad download is deleted.

    An archive is pinned by the sha256 of its bytes, a directory by `tree_sha256`. Without a
    pin the source is used, and the hash to pin it with is logged.
    """
    key = f"data.{name}.sha256"
    if path.is_dir():
        actual, what = tree_sha256(path, set(source.folders.values())), "tree hash"
    else:
        actual, what = sha256_of(path), "sha256"
    if not source.sha256:
        log.warning("%s is empty: %s is used unverified; pin it with %s=%s", key, path, key, actual)
        return
    if actual != source.sha256:
        note = ""
        if path.is_file() and path.resolve().is_relative_to(downloads_dir.resolve()):
            path.unlink()
            note = " (the download was deleted; run again to fetch it anew)"
        raise SourceError(
            f"data.{name}: {what} mismatch for {path}: expected {source.sha256} "
            f"({key}), got {actual}{note}"
        )
    log.info("%s: %s verified", name, what)


def not_an_archive(path: Path) -> str | None:
    """Why a file is plainly not an archive (empty, or an HTML page saved in its place)."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head:
        return "is empty (0 bytes)"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "is an HTML page, not an archive (an error or login page saved in its place?)"
    return None


def fetch_source(name: str, source: SourceParams, out_dir: Path, downloads_dir: Path) -> int:
    """Resolve, verify and extract one archive source into out_dir; return the files written."""
    path = resolve(name, source, downloads_dir)
    verify(name, source, path, downloads_dir)
    writer = RawWriter(out_dir, set(source.folders.values()))
    out_dir.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        copy_directory(path, writer)
    else:
        extractor = ARCHIVE_TYPES[archive_type(path, f"data.{name}.url")]
        if problem := not_an_archive(path):
            raise SourceError(f"data.{name}: {path} {problem}")
        try:
            extractor(path, writer)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
            raise SourceError(f"data.{name}: {path} is not a readable archive: {exc}") from None
    return writer.finish(name)


def download_sources(
    data: DataParams, raw_dir: Path = Path("data/raw"), downloads_dir: Path | None = None
) -> dict[str, int]:
    """Fill raw_dir with one folder per source in data.sources; return files per source.

    downloads_dir defaults to `<repo root>/data/downloads`. raw_dir appears only when every
    source succeeded (an error leaves nothing behind).
    """
    downloads_dir = downloads_dir or repo_root() / "data" / "downloads"
    counts: dict[str, int] = {}
    with atomic_path(raw_dir) as tmp:
        tmp.mkdir()
        for name in data.sources:
            if name == "synthetic":
                counts[name] = write_synthetic(data.synthetic, data.breeds, tmp / name)
            else:
                counts[name] = fetch_source(name, getattr(data, name), tmp / name, downloads_dir)
    return counts
