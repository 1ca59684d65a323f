"""Download stage: archives of both layouts, hostile members, checksums, resume, Kaggle."""

from __future__ import annotations

import csv
import hashlib
import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from datagen import (
    STANFORD_CHIHUAHUA,
    STANFORD_PUG,
    dbi_files,
    hostile_reasons,
    params_with,
    stanford_files,
    write_tar,
    write_tree,
    write_zip,
)

from dogbreeds.data import sources
from dogbreeds.data.merge import perceptual_hash
from dogbreeds.data.sources import SourceError, download_sources, fetch_source
from dogbreeds.data.synthetic import synthetic_image
from dogbreeds.params import SourceParams

STANFORD_WRITTEN = {
    f"{STANFORD_CHIHUAHUA}/{name}"
    for name in ("good1.jpg", "good2.jpg", "copy_of_good1.jpg", "good1_small.jpg")
    + ("truncated.jpg", "empty.jpg", "notes.jpg")
} | {f"{STANFORD_PUG}/{name}" for name in ("really_png.jpg", "grey.jpg", "good5.jpg")}


def stanford_source(url: str | Path, sha256: str = "") -> SourceParams:
    return SourceParams(url=str(url), sha256=sha256, folders=params_with().data.stanford.folders)


def dbi_source(url: str | Path, sha256: str = "") -> SourceParams:
    return SourceParams(url=str(url), sha256=sha256, folders=params_with().data.dbi.folders)


def written(out: Path) -> set[str]:
    """Files written under out, as <folder>/<name> (skipped.csv aside)."""
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"skipped.csv"}


def skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {row["member"]: row["reason"] for row in csv.DictReader(f)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- safe extraction ----------------------------------------------------------------------------


def test_stanford_tar_writes_only_breed_folders_and_lists_every_skip(tmp_path: Path) -> None:
    files = stanford_files()
    archive = write_tar(tmp_path / "images.tar", files)
    out = tmp_path / "raw" / "stanford"

    count = fetch_source("stanford", stanford_source(archive), out, tmp_path / "downloads")

    assert written(out) == STANFORD_WRITTEN
    assert count == len(STANFORD_WRITTEN)
    member = f"Images/{STANFORD_CHIHUAHUA}/good2.jpg"
    assert (out / STANFORD_CHIHUAHUA / "good2.jpg").read_bytes() == files[member]
    expected = hostile_reasons(files, "tar") | {"Images/n02088364-beagle/other.jpg": "other_folder"}
    assert skipped(out) == expected
    # Nothing escaped: no evil file anywhere, no link or device created.
    assert not list(tmp_path.rglob("*evil*")) and not Path("/tmp/abs_evil.jpg").exists()
    assert not any(p.is_symlink() for p in out.rglob("*"))


def test_dbi_zip_is_recognised_at_any_depth(tmp_path: Path) -> None:
    files = {f"extra/level/{name}": data for name, data in dbi_files().items()}
    archive = write_zip(tmp_path / "dog-breed-images.zip", files)
    out = tmp_path / "raw" / "dbi"

    fetch_source("dbi", dbi_source(archive), out, tmp_path / "downloads")

    assert {p.split("/")[0] for p in written(out)} == {"chihuahua", "pug"}
    assert len(written(out)) == len(STANFORD_WRITTEN)
    expected = hostile_reasons(files, "zip") | {
        "extra/level/dog-breed-images/corgi/other.jpg": "other_folder"
    }
    assert skipped(out) == expected
    assert not list(tmp_path.rglob("*evil*"))
    assert not any(p.is_symlink() for p in out.rglob("*"))


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz", ".tar.xz", ".zip"])
def test_every_archive_type_gives_the_same_files(tmp_path: Path, suffix: str) -> None:
    files = stanford_files()
    archive = tmp_path / f"images{suffix}"
    (write_zip if suffix == ".zip" else write_tar)(archive, files, hostile=False)
    out = tmp_path / "out"

    fetch_source("stanford", stanford_source(archive), out, tmp_path / "downloads")

    assert written(out) == STANFORD_WRITTEN


def test_unknown_archive_type_names_the_known_ones(tmp_path: Path) -> None:
    archive = tmp_path / "images.rar"
    archive.write_bytes(b"Rar!")
    with pytest.raises(SourceError, match=r"unknown archive type '\.rar'.*\.tar, .*\.zip"):
        fetch_source("stanford", stanford_source(archive), tmp_path / "out", tmp_path / "dl")


def test_corrupt_archive_is_one_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "images.zip"
    archive.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(SourceError, match="data.stanford: .*images.zip is not a readable archive"):
        fetch_source("stanford", stanford_source(archive), tmp_path / "out", tmp_path / "dl")


def test_archive_without_any_breed_folder_is_an_error(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "x.tar", {"Images/n02088364-beagle/a.jpg": b"x"}, hostile=False)
    with pytest.raises(SourceError, match="none of the folders of 'data.stanford.folders'"):
        fetch_source("stanford", stanford_source(archive), tmp_path / "out", tmp_path / "dl")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_local_directory_is_copied_with_the_same_rules(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "dbi-copy", dbi_files())
    (tree / "dog-breed-images/pug/link.jpg").symlink_to("/etc/passwd")
    (tree / "dog-breed-images/chihuahua/linked_dir").symlink_to(tree / "dog-breed-images/pug")
    out = tmp_path / "out"

    fetch_source("dbi", dbi_source(tree), out, tmp_path / "dl")

    assert len(written(out)) == len(STANFORD_WRITTEN)
    assert skipped(out) == {
        "dog-breed-images/chihuahua/linked_dir": "symlink",
        "dog-breed-images/pug/link.jpg": "symlink",
        "dog-breed-images/corgi/other.jpg": "other_folder",
    }


def test_a_directory_is_pinned_by_the_tree_hash_of_its_breed_folders(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "dbi-copy", dbi_files())
    pin = sources.tree_sha256(tree, set(params_with().data.dbi.folders.values()))
    fetch_source("dbi", dbi_source(tree, pin), tmp_path / "a", tmp_path / "dl")
    assert len(written(tmp_path / "a")) == len(STANFORD_WRITTEN)

    (tree / "dog-breed-images/corgi/new.jpg").write_bytes(b"a breed the study does not use")
    fetch_source("dbi", dbi_source(tree, pin), tmp_path / "b", tmp_path / "dl")  # same pin

    (tree / "dog-breed-images/pug/good5.jpg").write_bytes(b"changed upstream")
    with pytest.raises(SourceError, match=f"data.dbi: tree hash mismatch .* expected {pin}"):
        fetch_source("dbi", dbi_source(tree, pin), tmp_path / "c", tmp_path / "dl")


def test_an_unpinned_source_logs_the_hash_to_pin_it_with(tmp_path: Path, caplog) -> None:
    archive = write_tar(tmp_path / "images.tar", stanford_files(), hostile=False)
    fetch_source("stanford", stanford_source(archive), tmp_path / "a", tmp_path / "dl")
    assert f"data.stanford.sha256={sha256(archive)}" in caplog.text


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_an_archive_named_through_a_link_is_read(tmp_path: Path) -> None:
    """The url may be a link to the archive (to a shared copy, say); only files inside a
    directory source are never followed."""
    archive = write_tar(tmp_path / "images.tar", stanford_files(), hostile=False)
    (tmp_path / "link.tar").symlink_to(archive)
    pinned = stanford_source(tmp_path / "link.tar", sha256(archive))
    assert fetch_source("stanford", pinned, tmp_path / "o", tmp_path / "d") == len(STANFORD_WRITTEN)


def test_file_url_and_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = write_tar(tmp_path / "images.tar", stanford_files(), hostile=False)
    fetch_source("stanford", stanford_source(archive.as_uri()), tmp_path / "a", tmp_path / "dl")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # relative paths are relative to the repository root
    fetch_source("stanford", stanford_source("images.tar"), tmp_path / "b", tmp_path / "dl")
    assert written(tmp_path / "a") == written(tmp_path / "b") == STANFORD_WRITTEN


def test_relative_paths_and_downloads_resolve_against_dvc_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under dvc exp run --temp / dvc queue the cwd is a temporary copy without ignored files."""
    main = tmp_path / "main"
    (main / "data").mkdir(parents=True)
    archive = write_tar(main / "data" / "images.tar", stanford_files(), hostile=False)
    copy = main / ".dvc" / "tmp" / "exps" / "run1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(main))
    relative = params_with(
        **{
            "data.sources": ["stanford"],
            "data.stanford.url": "data/images.tar",
            "data.stanford.sha256": "",
        }
    )
    download_sources(relative.data, copy / "data" / "raw")  # found in main, not in the copy

    saved_to = []
    monkeypatch.setattr(
        sources, "http_download", lambda url, dest, key, check: saved_to.append(dest) or archive
    )
    remote = params_with(
        **{
            "data.sources": ["stanford"],
            "data.stanford.url": "http://h/images.tar",
            "data.stanford.sha256": "",
        }
    )
    download_sources(remote.data, copy / "data" / "raw")
    assert saved_to[0].parent == main / "data" / "downloads"  # survives the copy's deletion


def test_the_download_cache_is_keyed_by_the_whole_url(tmp_path: Path) -> None:
    one = sources.download_path("https://a.org/v1/images.tar", tmp_path, "stanford")
    two = sources.download_path("https://a.org/v2/images.tar", tmp_path, "stanford")
    assert one != two and one.name.endswith("-images.tar") and two.name.endswith("-images.tar")
    assert one == sources.download_path("https://a.org/v1/images.tar", tmp_path, "stanford")


def test_unknown_scheme_and_missing_path_name_the_param(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="'data.stanford.url' has unknown scheme 'ftp'"):
        fetch_source("stanford", stanford_source("ftp://x/y.tar"), tmp_path / "o", tmp_path / "d")
    with pytest.raises(SourceError, match="'data.stanford.url': .*nope.tar does not exist"):
        fetch_source("stanford", stanford_source(tmp_path / "nope.tar"), tmp_path / "o", tmp_path)


# --- checksums and the whole stage --------------------------------------------------------------


def test_download_sources_writes_one_folder_per_source(tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "images.tar", stanford_files())
    zip_ = write_zip(tmp_path / "dbi.zip", dbi_files())
    data = params_with(
        **{
            "data.sources": ["stanford", "dbi", "synthetic"],
            "data.stanford.url": str(tar),
            "data.stanford.sha256": sha256(tar),
            "data.dbi.url": str(zip_),
            "data.synthetic.per_class": 2,
        }
    ).data
    raw = tmp_path / "data" / "raw"

    counts = download_sources(data, raw, tmp_path / "data" / "downloads")

    assert counts == {"stanford": 10, "dbi": 10, "synthetic": 14}
    assert sorted(p.name for p in raw.iterdir()) == ["dbi", "stanford", "synthetic"]


def test_sha_mismatch_names_source_and_hashes_and_leaves_nothing(tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "images.tar", stanford_files())
    data = params_with(
        **{
            "data.sources": ["synthetic", "stanford"],
            "data.stanford.url": str(tar),
            "data.stanford.sha256": "ab" * 32,
        }
    ).data
    data_dir = tmp_path / "data"

    with pytest.raises(SourceError) as error:
        download_sources(data, data_dir / "raw", data_dir / "downloads")

    message = str(error.value)
    assert "data.stanford" in message and "ab" * 32 in message and sha256(tar) in message
    assert list(data_dir.iterdir()) == []  # not even the synthetic source that succeeded
    assert tar.exists()  # a local archive is the user's: never deleted


# --- http: progress, resume ---------------------------------------------------------------------

PAYLOAD = np.random.default_rng(0).bytes(300_000)


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `payload` with Range support; `cut_at` makes the next response stop early."""

    payload = PAYLOAD
    cut_at: int | None = None
    honour_range = True
    ranges: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        requested = self.headers.get("Range")
        type(self).ranges.append(requested)
        start = 0
        if requested and self.honour_range:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            size = len(self.payload)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut, type(self).cut_at = type(self).cut_at, None
        self.wfile.write(body if cut is None else body[:cut])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local http server on 127.0.0.1 serving PAYLOAD at /archive.tar."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    RangeHandler.ranges, RangeHandler.cut_at, RangeHandler.honour_range = [], None, True
    RangeHandler.payload = PAYLOAD
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/archive.tar"
    httpd.shutdown()
    httpd.server_close()


def test_interrupted_download_keeps_part_and_resumes(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "downloads" / "archive.tar"
    RangeHandler.cut_at = 100_000

    with pytest.raises(SourceError, match="archive.tar.part is kept, run again to resume"):
        sources.http_download(server, dest, "data.stanford.url")
    assert (tmp_path / "downloads" / "archive.tar.part").stat().st_size == 100_000

    assert sources.http_download(server, dest, "data.stanford.url") == dest
    assert dest.read_bytes() == PAYLOAD
    assert RangeHandler.ranges == [None, "bytes=100000-"]
    assert not dest.with_name("archive.tar.part").exists()


def test_server_without_range_support_restarts(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "archive.tar"
    dest.with_name("archive.tar.part").write_bytes(b"stale bytes")
    RangeHandler.honour_range = False
    sources.http_download(server, dest, "data.stanford.url")
    assert dest.read_bytes() == PAYLOAD


def test_bad_download_is_deleted_so_the_next_run_fetches_again(server: str, tmp_path: Path) -> None:
    source = stanford_source(server, sha256="cd" * 32)
    downloads = tmp_path / "downloads"
    with pytest.raises(SourceError, match="the download was deleted"):
        fetch_source("stanford", source, tmp_path / "out", downloads)
    assert list(downloads.iterdir()) == []


def test_a_download_is_cached_only_with_the_pinned_sha256(server: str, tmp_path: Path) -> None:
    """An archive of the right kind but other bytes (a new upstream version, a mirror's copy)
    is deleted before it becomes the cached file; the right one is kept and used."""
    archive = write_tar(tmp_path / "images.tar", stanford_files(), hostile=False)
    RangeHandler.payload = archive.read_bytes()
    downloads = tmp_path / "downloads"
    with pytest.raises(SourceError) as error:
        fetch_source("stanford", stanford_source(server, "cd" * 32), tmp_path / "a", downloads)
    assert str(error.value) == (
        f"params: 'data.stanford.url': {server} sent an archive whose sha256 is "
        f"{sha256(archive)}, not the pinned {'cd' * 32}; the download was deleted (run again "
        "once the server sends the archive)"
    )
    assert list(downloads.iterdir()) == []
    pinned = stanford_source(server, sha256(archive))
    assert fetch_source("stanford", pinned, tmp_path / "b", downloads) == len(STANFORD_WRITTEN)
    assert [p.read_bytes() for p in downloads.iterdir()] == [archive.read_bytes()]


# --- kaggle -------------------------------------------------------------------------------------


def test_kaggle_failure_gives_the_manual_steps(tmp_path: Path, monkeypatch) -> None:
    import kagglehub

    def offline(handle: str) -> str:
        raise ConnectionError("no route to host\nretrying")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(SourceError) as error:
        fetch_source("dbi", dbi_source("kaggle://eward96/dog-breed-images"), tmp_path, tmp_path)
    message = str(error.value)
    assert "\n" not in message and "no route to host retrying" in message
    assert "https://www.kaggle.com/datasets/eward96/dog-breed-images" in message
    assert "-S data.dbi.url=data/downloads/dog-breed-images.zip" in message


def test_kaggle_versions_are_pinned_and_bad_kaggle_urls_refused(tmp_path, monkeypatch, caplog):
    import kagglehub

    cache = write_tree(tmp_path / "cache", dbi_files())
    asked = []
    monkeypatch.setattr(kagglehub, "dataset_download", lambda h: asked.append(h) or str(cache))
    url = "kaggle://eward96/dog-breed-images/versions/2"
    fetch_source("dbi", dbi_source(url), tmp_path / "o", tmp_path)
    assert asked == ["eward96/dog-breed-images/versions/2"]
    assert "names no version" not in caplog.text

    fetch_source("dbi", dbi_source("kaggle://eward96/dog-breed-images"), tmp_path / "p", tmp_path)
    assert "names no version, so an upstream update changes the data silently" in caplog.text

    for bad in ("kaggle://eward96", "kaggle://a/b/versions/latest", "kaggle://a/b/c"):
        with pytest.raises(SourceError, match="kaggle://owner/dataset/versions/N"):
            fetch_source("dbi", dbi_source(bad), tmp_path / "q", tmp_path)


def test_a_kaggle_token_never_reaches_a_message(tmp_path: Path, monkeypatch) -> None:
    import kagglehub

    token = "fake-kaggle-token-5f3a9c"
    monkeypatch.setenv("KAGGLE_KEY", token)

    def refused(handle: str) -> str:
        raise PermissionError(f"401 for key {token} at https://user:{token}@www.kaggle.com/api")

    monkeypatch.setattr(kagglehub, "dataset_download", refused)
    with pytest.raises(SourceError) as error:
        fetch_source("dbi", dbi_source("kaggle://eward96/dog-breed-images"), tmp_path, tmp_path)
    assert token not in str(error.value) and "401 for key ***" in str(error.value)
    assert "https://user:***@www.kaggle.com" in str(error.value)


def test_kaggle_download_is_used_as_a_directory(tmp_path: Path, monkeypatch) -> None:
    import kagglehub

    cache = write_tree(tmp_path / "cache", dbi_files())
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: str(cache))
    fetch_source("dbi", dbi_source("kaggle://eward96/dog-breed-images"), tmp_path / "o", tmp_path)
    assert len(written(tmp_path / "o")) == len(STANFORD_WRITTEN)


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_never_near_duplicate(tmp_path: Path) -> None:
    data = params_with(**{"data.sources": ["synthetic"], "data.synthetic.per_class": 10}).data
    download_sources(data, tmp_path / "a", tmp_path / "dl")
    download_sources(data, tmp_path / "b", tmp_path / "dl")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 70
    assert all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files
    )

    hashes = np.array(
        [
            perceptual_hash(synthetic_image(label, i, 7, 48, 7))
            for label in range(7)
            for i in range(20)
        ],
        dtype=np.uint64,
    )
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    np.fill_diagonal(distance, 64)
    assert distance.min() > params_with().merge.near_dup_max_bits + 4  # a safe margin


def test_synthetic_classes_are_learnable_from_colour() -> None:
    """A nearest-centroid rule on the colour of saturated (shape) pixels gets every class."""

    def shape_colour(label: int, index: int) -> np.ndarray:
        pixels = np.asarray(synthetic_image(label, index, 7, 48, 7), float).reshape(-1, 3)
        saturated = pixels.max(1) - pixels.min(1) > 100  # the background is grey-ish
        return pixels[saturated].mean(0)

    centroids = np.array([np.mean([shape_colour(c, i) for i in range(10)], 0) for c in range(7)])
    for label in range(7):
        for index in range(10, 20):
            nearest = np.argmin(np.linalg.norm(centroids - shape_colour(label, index), axis=1))
            assert nearest == label


def test_an_unreachable_host_points_to_the_readmes_local_archive_section(tmp_path: Path) -> None:
    import socket

    with socket.socket() as unused:  # a port nothing listens on: refused, as offline
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/images.tar"
    with pytest.raises(SourceError) as failed:
        sources.http_download(url, tmp_path / "images.tar", "data.stanford.url")
    message = str(failed.value)
    assert message.startswith(f"params: 'data.stanford.url': cannot reach {url}: ")
    section = "Local copies of the archives"
    assert message.endswith(
        f"set data.stanford.url to a local copy (README.md, section '{section}')"
    )
    assert f"### {section}" in (Path(__file__).parents[1] / "README.md").read_text()
