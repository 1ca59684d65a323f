"""Download stage: fetch each source, verify its sha256 and extract only its breed folders.

(Over twice the package's usual 400 lines for a reason: the safety rules of extraction, its
budget, the archive kinds and the download/check/verify/resume logic are one trust boundary,
reviewed together.)

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
else is listed with a reason in `data/raw/<source>/skipped.csv`. Extraction has a budget
(`data.extract`): a member's size, the total written and the compression ratio are checked
chunk by chunk while streaming, before the chunk is written. A member name that is not UTF-8
(an old Windows tar) is decoded as cp1252 and listed in `renamed.csv`; a name repeated in an
archive keeps its last copy, as `tar x` does.

Nothing is trusted by its name: a source path must be a regular file or a directory (a FIFO or
`/dev/zero` would block a read forever), and an archive's first bytes must say it is the kind
its name says, before a byte of it is hashed. A download becomes the cached file only once it
passed those checks and its pin; otherwise it is deleted and the message says what came.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import logging
import lzma
import os
import re
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
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
from dogbreeds.params import DataParams, ExtractParams, SourceParams

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
    lzma.LZMAError,
    zipfile.BadZipFile,
    RuntimeError,
    NotImplementedError,
)
# What reading an archive's own structure (headers, the central directory) can raise.
ARCHIVE_READ_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
)
MIB_ = 1 << 20
NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows filesystems
# Bytes a member (or a compressed stream) may expand to before its ratio is judged: a small
# file (a tar header, a text file) can compress far better than a photo does.
RATIO_SLACK = 1 << 20
# What the extraction budget is when no params are given (params.yaml's data.extract).
DEFAULT_EXTRACT = ExtractParams(max_member_mib=64, max_total_mib=4096, max_ratio=100)


class SourceError(DogbreedsError):
    """A source cannot be fetched, verified or extracted; the message names the param."""


class ArchiveReadError(Exception):
    """The archive's own bytes failed to read (fetch_source says so, naming the archive)."""


# ---------------------------------------------------------------------------------------------
# Member names that are text
# ---------------------------------------------------------------------------------------------


def printable(name: str) -> str:
    """A name as valid text for csv files and messages: undecodable bytes as \\xNN escapes."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def repaired(name: str) -> str:
    """A member name as text: tarfile keeps bytes that are not UTF-8 as lone surrogates, which
    no file system or DVC can write back; such a name is decoded as cp1252 (what an old Windows
    tool wrote), or latin-1 for cp1252's five unused bytes."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def zip_name(info: zipfile.ZipInfo) -> str:
    """A zip entry's name: zipfile reads cp437 unless the entry says UTF-8, but most tools
    write UTF-8 without saying so; UTF-8 is taken when the bytes are valid UTF-8."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


# ---------------------------------------------------------------------------------------------
# The extraction budget
# ---------------------------------------------------------------------------------------------


class Budget:
    """What the download stage may still write: checked before each chunk reaches the disk."""

    def __init__(self, extract: ExtractParams) -> None:
        self.extract = extract
        self.member = extract.max_member_bytes
        self.ratio = extract.max_ratio
        self.left = extract.max_total_bytes

    def take(self, n: int, source: str, member: str) -> None:
        """Account for n more bytes, or stop the stage when the total cap would be passed."""
        if n > self.left:
            raise SourceError(
                f"data.{source}: the sources would write more than "
                f"{self.extract.max_total_mib:g} MiB ('data.extract.max_total_mib'); stopped "
                f"before {printable(member)} (nothing was kept; raise the cap if the data "
                "really are that big)"
            )
        self.left -= n

    def too_large(self) -> str:
        return f"too_large: over {self.extract.max_member_mib:g} MiB (data.extract.max_member_mib)"

    def too_compressed(self) -> str:
        return f"compression_ratio: expands over {self.ratio:g}-fold (data.extract.max_ratio)"


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
    if len(parts[-1].encode("utf-8", "surrogateescape")) > NAME_MAX:
        return f"name_too_long: over {NAME_MAX} bytes"
    return parts[-2], parts[-1]


class RawWriter:
    """Writes accepted members of one source into its raw folder and records every skip.

    A member is accepted when its name is safe, its parent folder is one of `folders` and its
    base name is an ordinary file name; it is written as `<out_dir>/<folder>/<basename>`, a
    path built from two vetted components, so it cannot escape `out_dir`. Each copy goes to a
    temporary name first and replaces the file only when whole and within the budget, so a
    later member of the same name wins (as with `tar x`) and a failed one leaves no trace.
    """

    def __init__(
        self, out_dir: Path, folders: set[str], source: str = "", budget: Budget | None = None
    ) -> None:
        self.out_dir = out_dir
        self.folders = folders
        self.source = source or out_dir.name
        self.budget = budget or Budget(DEFAULT_EXTRACT)
        self.written: Counter[str] = Counter()  # folder -> files written
        self.skipped: list[tuple[str, str]] = []  # (member, reason)
        self.renamed: list[tuple[str, str]] = []  # (member as escaped bytes, name written)
        self.unreadable: dict[str, str] = {}  # folder -> why it could not be listed
        self.owner: dict[Path, tuple[str, int]] = {}  # target -> (member, bytes) written there
        self.temporaries = 0

    def skip(self, member: str, reason: str) -> None:
        self.skipped.append((printable(member), reason))

    def place(self, member: str) -> Path | None:
        """The destination for a regular-file member, or None (and the skip recorded)."""
        name = repaired(member)
        kept = classify(name, self.folders)
        if isinstance(kept, str):
            self.skip(member, kept)
            return None
        return self.out_dir / kept[0] / kept[1]

    def write(
        self,
        member: str,
        open_member: Callable[[], IO[bytes]],
        size: int | None = None,
        compressed: int | None = None,
        expanded: Callable[[int], None] | None = None,
    ) -> None:
        """Copy a regular file's bytes to its destination, if it has one.

        `open_member` is only called for accepted members, so skipped ones are never read.
        `size` is the size the archive declares (a bigger one is skipped unread), `compressed`
        its compressed size (zip: the ratio is checked per member), `expanded` a check of the
        whole stream called with the bytes of this member so far (a compressed tar). A member
        that fails to read (bad CRC, encrypted) or breaks a cap is skipped, not half-written.
        """
        target = self.place(member)
        if target is None:
            return
        if size is not None and size > self.budget.member:
            self.skip(member, self.budget.too_large())
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        self.temporaries += 1
        part = target.parent / f".part-{self.temporaries}"  # short: the name may be long
        try:
            done = self._copy(member, open_member, part, compressed, expanded)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        if isinstance(done, str):
            part.unlink(missing_ok=True)
            self.skip(member, done)
            return
        if target in self.owner:  # the same name again: the later copy wins, as with `tar x`
            earlier, size_before = self.owner[target]
            self.skip(earlier, "duplicate_name: replaced by a later member of the same name")
            self.budget.left += size_before
            self.written[target.parent.name] -= 1
        os.replace(part, target)
        self.owner[target] = (member, done)
        self.written[target.parent.name] += 1
        if (name := repaired(member)) != member:
            self.renamed.append((printable(member), name))

    def _copy(
        self,
        member: str,
        open_member: Callable[[], IO[bytes]],
        part: Path,
        compressed: int | None,
        expanded: Callable[[int], None] | None,
    ) -> int | str:
        """Stream a member into `part` within the budget: the bytes written, or why not."""
        done = 0
        try:
            stream = open_member()
        except PermissionError as exc:  # a directory source's file the user may not read
            return f"unreadable: {exc.strerror or exc}"
        except MEMBER_READ_ERRORS as exc:
            return f"corrupt_member: {exc}"
        with stream, open(part, "wb") as out:
            while True:
                try:
                    chunk = stream.read(CHUNK)
                except tarfile.TarError as exc:  # a tar cut short: the archive's, not the member's
                    raise ArchiveReadError(exc) from None
                except MEMBER_READ_ERRORS as exc:
                    self.budget.left += done
                    return f"corrupt_member: {exc}"
                if not chunk:
                    return done
                if done + len(chunk) > self.budget.member:
                    self.budget.left += done
                    return self.budget.too_large()
                if compressed is not None and done + len(chunk) > max(
                    RATIO_SLACK, self.budget.ratio * compressed
                ):
                    self.budget.left += done
                    return self.budget.too_compressed()
                if expanded is not None:
                    expanded(done + len(chunk))
                self.budget.take(len(chunk), self.source, member)
                out.write(chunk)
                done += len(chunk)

    def finish(self, source: str) -> int:
        """Write skipped.csv (and renamed.csv), log what happened, return the files written."""
        with open(self.out_dir / "skipped.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["member", "reason"])
            writer.writerows(sorted(self.skipped))
        if self.renamed:
            with open(self.out_dir / "renamed.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["member", "written_as"])
                writer.writerows(sorted(self.renamed))
            log.warning(
                "%s: %d member name(s) were not UTF-8 and were decoded as cp1252 (renamed.csv)",
                source,
                len(self.renamed),
            )
        found = {folder for folder, n in self.written.items() if n > 0}
        missing = sorted(self.folders - found)
        if len(missing) == len(self.folders):
            unreadable = "".join(
                f"; {folder} is unreadable ({why})"
                for folder, why in sorted(self.unreadable.items())
            )
            raise SourceError(
                f"data.{source}: none of the folders of 'data.{source}.folders' "
                f"({', '.join(sorted(self.folders))}) was found; check the url and the folder "
                f"names{unreadable}"
            )
        for folder in missing:
            if folder in self.unreadable:
                log.warning(
                    "%s: folder %s is unreadable (%s); its breed gets no images here",
                    source, folder, self.unreadable[folder],
                )  # fmt: skip
            else:
                log.warning(
                    "%s: folder %s not found; its breed gets no images here", source, folder
                )
        reasons = Counter(reason.split(":")[0] for _, reason in self.skipped)
        log.info(
            "%s: wrote %d files in %d folders; skipped %d (%s)",
            source,
            sum(self.written.values()),
            len(found),
            len(self.skipped),
            ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())) or "none",
        )
        return sum(self.written.values())


# ---------------------------------------------------------------------------------------------
# Extraction, dispatched by archive type
# ---------------------------------------------------------------------------------------------


class StreamRatio:
    """Bytes out per byte in of a compressed tar, judged at every header and every chunk: a
    tar.gz of zeros would otherwise keep the CPU busy for hours skipping what it never writes."""

    def __init__(self, raw: IO[bytes], archive: Path, source: str, max_ratio: float) -> None:
        self.raw, self.archive, self.source, self.max_ratio = raw, archive, source, max_ratio

    def check(self, position: int, member: str) -> None:
        """`position`: how far into the uncompressed tar the reading is."""
        consumed = max(self.raw.tell(), 1)
        if position > RATIO_SLACK and position > self.max_ratio * consumed:
            raise SourceError(
                f"data.{self.source}: {self.archive} expands over {self.max_ratio:g}-fold "
                f"('data.extract.max_ratio') by {printable(member)}: a decompression bomb, not "
                "a photo archive (nothing was kept)"
            )


def _tar_members(tar: tarfile.TarFile, ratio: StreamRatio) -> Iterator[tarfile.TarInfo]:
    """The members of a tar, read one header at a time; a damaged header is the archive's."""
    while True:
        try:
            member = tar.next()
        except ARCHIVE_READ_ERRORS as exc:
            raise ArchiveReadError(exc) from None
        if member is None:
            return
        ratio.check(tar.offset, member.name)
        yield member


def extract_tar(archive: Path, writer: RawWriter) -> None:
    """Stream a (possibly compressed) tar; links and devices are skipped, never created."""
    with open(archive, "rb") as raw:
        ratio = StreamRatio(raw, archive, writer.source, writer.budget.ratio)
        try:
            tar = tarfile.open(fileobj=raw, mode="r:*")  # noqa: SIM115 (closed by `with tar`)
        except ARCHIVE_READ_ERRORS as exc:
            raise ArchiveReadError(exc) from None
        with tar:
            members = _tar_members(tar, ratio)
            for member in tqdm(members, desc=f"extract {archive.name}", unit="file", leave=False):
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
                    writer.write(
                        member.name,
                        partial(tar.extractfile, member),
                        size=member.size,
                        expanded=lambda n, m=member: ratio.check(m.offset_data + n, m.name),
                    )


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
    try:
        zf = zipfile.ZipFile(archive)
        infos = zf.infolist()
    except ARCHIVE_READ_ERRORS as exc:
        raise ArchiveReadError(exc) from None
    with zf:
        for info in tqdm(infos, desc=f"extract {archive.name}", unit="file", leave=False):
            name = zip_name(info)
            if info.is_dir():
                continue
            if problem := member_problem(name) or _zip_kind(info):
                writer.skip(name, problem)
            else:
                writer.write(
                    name, partial(zf.open, info), size=info.file_size, compressed=info.compress_size
                )


# What the first bytes of each archive kind are; tarfile reads a compressed tar of any kind
# under any tar suffix, so the suffixes name two families: tar (plain or compressed) and zip.
MAGIC = (
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)
FAMILIES = {"zip": "zip", "gzip": "tar", "bzip2": "tar", "xz": "tar", "tar": "tar"}
KIND_WORDS = {
    "zip": "a zip archive",
    "tar": "a tar archive",
    "gzip": "a gzip-compressed file",
    "bzip2": "a bzip2-compressed file",
    "xz": "an xz-compressed file",
}
# Other things a server or a user may hand over instead of an archive, by their first bytes.
OTHER_MAGIC = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"Rar!", "a RAR archive"),
    (b"%PDF", "a PDF document"),
)
HEAD = 1024  # bytes read to tell a file's kind (a tar header is 512)

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


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, words in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return words
    return "not a regular file"


def open_regular(path: Path, follow_link: bool = False) -> IO[bytes]:
    """Open a file for reading only if it is a regular file, judged on the opened descriptor
    (no race with a swap) and without blocking on a FIFO. A last-component link is refused
    unless `follow_link` (a source named by the user may be a link; a file inside a source is
    never followed out of it)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    if not follow_link:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(f"{file_kind(mode)}, not a regular file")
    return os.fdopen(fd, "rb")


def _directory_files(root: Path, writer: RawWriter | None) -> Iterator[tuple[str, Path, int]]:
    """(member, path, lstat mode) of every file under root, sorted, never following a directory
    link; an unreadable folder is recorded on `writer` (or, without one, silently left out)."""

    def unreadable(exc: OSError) -> None:
        if writer is not None and exc.filename is not None:
            folder = Path(exc.filename)
            member = folder.relative_to(root).as_posix() if folder != root else "."
            writer.unreadable[folder.name] = exc.strerror or str(exc)
            writer.skip(member, f"unreadable_folder: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath)
        dirnames.sort()
        for name in [d for d in dirnames if (here / d).is_symlink()]:
            if writer is not None:
                writer.skip((here / name).relative_to(root).as_posix(), "symlink")
        for name in sorted(filenames):
            path = here / name
            try:
                mode = path.lstat().st_mode
            except OSError as exc:
                if writer is not None:
                    writer.skip(path.relative_to(root).as_posix(), f"unreadable: {exc.strerror}")
                continue
            yield path.relative_to(root).as_posix(), path, mode


def _is_tar_header(block: bytes) -> bool:
    """Whether 512 bytes are a tar header: POSIX/GNU magic, or an old (v7) header's checksum."""
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    field = block[148:156].replace(b"\x00", b" ").strip()
    try:
        checksum = int(field, 8)
    except ValueError:
        return False
    return checksum == sum(block[:148]) + 8 * 32 + sum(block[156:512])


def sniff(head: bytes) -> str | None:
    """The archive kind (a key of KIND_WORDS) the first bytes of a file announce, or None."""
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    return "tar" if _is_tar_header(head[:512]) else None


def amount(size: int) -> str:
    if size < 10_000:
        return f"{size} byte{'s' if size != 1 else ''}"
    if size < 10 * MIB_:
        return f"{size / 1024:.0f} KiB"
    return f"{size / MIB_:.0f} MiB"


def describe(head: bytes, size: int) -> str:
    """What a file holds, in words: 'an HTML page of 52 bytes', 'a zip archive of 812 bytes'."""
    if size == 0:
        return "an empty file (0 bytes)"
    if kind := sniff(head):
        return f"{KIND_WORDS[kind]} of {amount(size)}"
    for magic, words in OTHER_MAGIC:
        if head.startswith(magic):
            return f"{words} of {amount(size)}"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return f"an HTML page of {amount(size)}"
    if text.startswith(b"<?xml"):
        return f"an XML document of {amount(size)}"
    try:
        line = head.decode("utf-8").strip().splitlines()[0][:60]
    except (UnicodeDecodeError, IndexError):
        return f"{amount(size)} of unrecognised data"
    if not line.isprintable():
        return f"{amount(size)} of unrecognised data"
    return f"a text file of {amount(size)} ({line!r})"


def check_archive(path: Path, suffix: str) -> str | None:
    """Why the file at `path` is not an archive of the family its suffix names (None if it is).

    Reads the first bytes only: a multi-gigabyte wrong file is refused before it is hashed.
    """
    with open_regular(path, follow_link=True) as f:
        head = f.read(HEAD)
        size = os.fstat(f.fileno()).st_size
    expected = FAMILIES["zip" if suffix == ".zip" else "tar"]
    kind = sniff(head)
    if kind is not None and FAMILIES[kind] == expected:
        return None
    what = describe(head, size)
    hint = ""
    if kind is not None:  # the other family: the name is wrong, the file may be right
        hint = f"; name it .{'zip' if FAMILIES[kind] == 'zip' else 'tar'} to use it as one"
    elif what.startswith("an HTML page"):
        hint = " (an error or login page saved in its place?)"
    return f"{what}, not a {expected} archive{hint}"


def copy_directory(root: Path, writer: RawWriter) -> None:
    """Copy a local directory's breed folders, with the same rules as an archive."""
    for member, path, mode in _directory_files(root, writer):
        if stat.S_ISLNK(mode):
            writer.skip(member, "symlink")
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            writer.skip(member, "device")
        elif not stat.S_ISREG(mode):
            writer.skip(member, "not_regular_file")
        else:
            writer.write(member, partial(open_regular, path), size=path.lstat().st_size)


# ---------------------------------------------------------------------------------------------
# Fetching and verifying
# ---------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (a regular file only: see `open_regular`)."""
    digest = hashlib.sha256()
    with open_regular(path, follow_link=True) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(root: Path, folders: set[str]) -> str:
    """The content hash of a directory source: what `copy_directory` would take from it.

    sha256 over the sorted lines `<relative path> <sha256 of the file>` of every regular file
    that sits in one of the breed folders (at any depth, by the same rules as extraction).
    Files elsewhere do not count, so a dataset that adds a breed the study does not use keeps
    its hash; a changed, added or removed image in a used breed changes it. A file or folder
    that cannot be read counts as absent (the copy skips it too, and lists it).
    """
    lines = []
    for member, path, mode in _directory_files(root, None):
        if stat.S_ISREG(mode) and not isinstance(classify(repaired(member), folders), str):
            try:
                with open_regular(path) as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                continue
            lines.append(f"{printable(member)} {digest}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def download_path(url: str, downloads_dir: Path, name: str) -> Path:
    """Where `url` is cached: one file per URL, keyed by a hash of the whole URL.

    Two URLs ending in the same file name (`.../v1/images.tar`, `.../v2/images.tar`) never
    share a cache entry, even when neither has a sha256 to tell them apart.
    """
    filename = Path(urlparse(url).path).name or f"{name}.download"
    return downloads_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{filename}"


def http_download(
    url: str, dest: Path, key: str, check: Callable[[Path], str | None] | None = None
) -> Path:
    """Download `url` to `dest`, resuming from `dest.part` when an earlier run was cut off.

    The bytes go to `<dest>.part` and are renamed to `dest` only once complete and, when
    `check` is given, once `check(part)` finds nothing wrong (else the part is deleted and the
    error says what came), so `dest` existing means a finished, checked download. A cached
    `dest` that fails the check (left by an older version) is deleted and fetched again. A
    server that ignores Range restarts from zero.
    Over 60 lines on purpose: one request's life (cache check, Range, the response's status
    cases, the byte loop, the rename) reads best in the order it happens.
    """
    if dest.exists():
        problem = check(dest) if check else None
        if problem is None:
            log.info("%s: using %s downloaded earlier", key, dest)
            return dest
        log.warning(
            "%s: %s downloaded earlier is %s; deleted, fetching it again", key, dest, problem
        )
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range starts at the end: the .part is complete
            return _keep_download(part, dest, url, key, check)
        raise SourceError(
            f"params: '{key}': download of {url} failed: HTTP {exc.code} {exc.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(
            f"params: '{key}': cannot reach {url}: {exc}; offline, set {key} to a local copy "
            "(README.md, section 'Local copies of the archives')"
        ) from None
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
    return _keep_download(part, dest, url, key, check)


def _keep_download(
    part: Path, dest: Path, url: str, key: str, check: Callable[[Path], str | None] | None
) -> Path:
    """Rename a complete download onto its cache name, or delete it when `check` refuses it."""
    problem = check(part) if check else None
    if problem is not None:
        part.unlink()
        raise SourceError(
            f"params: '{key}': {url} sent {problem}; the download was deleted (run again once "
            "the server sends the archive)"
        )
    os.replace(part, dest)
    return dest


def download_check(suffix: str, sha256: str) -> Callable[[Path], str | None]:
    """What a download must be before it is cached: an archive of its suffix's kind, and the
    pinned sha256 when there is one."""

    def check(path: Path) -> str | None:
        if problem := check_archive(path, suffix):
            return problem
        if sha256 and (actual := sha256_of(path)) != sha256:
            return f"an archive whose sha256 is {actual}, not the pinned {sha256}"
        return None

    return check


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
    directory, so a stage run in DVC's temporary copy finds the same files. A local path must
    be a regular file or a directory: reading a FIFO or a device would never end.
    """
    key, url = f"data.{name}.url", source.url
    parsed = urlparse(url)
    # A one-letter "scheme" is a Windows drive ("C:\\data"), i.e. a local path.
    scheme = parsed.scheme.lower() if len(parsed.scheme) > 1 else ""
    if scheme in ("http", "https"):
        dest = download_path(url, downloads_dir, name)
        suffix = archive_type(dest, key)  # before a byte is fetched
        return http_download(url, dest, key, download_check(suffix, source.sha256))
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
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceError(f"params: '{key}': {path} does not exist") from None
    except OSError as exc:
        raise SourceError(f"params: '{key}': {path} cannot be read ({exc.strerror})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise SourceError(
            f"params: '{key}': {path} is {file_kind(mode)}, not an archive file or a directory"
        )
    return path


def verify(name: str, source: SourceParams, path: Path, downloads_dir: Path) -> None:
    """Check the pin before anything is extracted; a bad download is deleted.

    An archive is pinned by the sha256 of its bytes, a directory by `tree_sha256`. Without a
    pin the source is used, and the hash to pin it with is logged (only for a file already
    known to be an archive of its kind: a pin must never bless an error page).
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


def fetch_source(
    name: str,
    source: SourceParams,
    out_dir: Path,
    downloads_dir: Path,
    budget: Budget | None = None,
) -> int:
    """Resolve, check, verify and extract one archive source into out_dir; return the files
    written. The checks run cheapest first: the path's type, the name's archive type, the
    first bytes, then the hash of every byte."""
    path = resolve(name, source, downloads_dir)
    writer = RawWriter(out_dir, set(source.folders.values()), name, budget)
    extractor = None
    if not path.is_dir():
        suffix = archive_type(path, f"data.{name}.url")
        extractor = ARCHIVE_TYPES[suffix]
        if problem := check_archive(path, suffix):
            raise SourceError(f"data.{name}: {path} is {problem}")
    verify(name, source, path, downloads_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if extractor is None:
        copy_directory(path, writer)
    else:
        try:
            extractor(path, writer)
        except ArchiveReadError as exc:
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
    budget = Budget(data.extract)  # one budget for all sources: the disk is shared
    counts: dict[str, int] = {}
    with atomic_path(raw_dir) as tmp:
        tmp.mkdir()
        for name in data.sources:
            if name == "synthetic":
                counts[name] = write_synthetic(data.synthetic, data.breeds, tmp / name)
            else:
                source = getattr(data, name)
                counts[name] = fetch_source(name, source, tmp / name, downloads_dir, budget)
    return counts
