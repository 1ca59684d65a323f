"""Data lineage: each run names the prepared data version it used, by DVC's own hash.

The MLflow UI's Dataset column then reads `prepared@<hash>`, the same hash as `dvc.lock`'s
entry for `data/prepared`, so a run and a DVC commit can be matched without guessing.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from dogbreeds.tracking.runs import Run
from dogbreeds.tracking.store import write

if TYPE_CHECKING:  # MLflow is imported where a run is opened (see tracking.store)
    from mlflow.entities import Dataset


# dvc.lock grows with every stage and every training stage reads it: libyaml's safe loader where
# PyYAML was built with it (the same tree, faster: docs/performance.md), its own otherwise.
LOCK_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def dvc_hash(out: str, lock_file: Path = Path("dvc.lock")) -> str | None:
    """The hash DVC recorded for output `out` (e.g. `data/prepared` -> `3f2c...a1.dir`), or None
    if dvc.lock does not list it yet."""
    try:
        lock = yaml.load(lock_file.read_text(), Loader=LOCK_LOADER) or {}
    except (OSError, yaml.YAMLError):
        return None
    for stage in (lock.get("stages") or {}).values():
        for entry in stage.get("outs") or []:
            if entry.get("path") == out and entry.get("md5"):
                return entry["md5"]
    return None


def dvc_records(md5: str, root: Path, lock_file: Path = Path("dvc.lock")) -> bool | None:
    """Whether DVC recorded an output file whose md5 is `md5`: in dvc.lock (here or at `root`),
    or in an entry of its run cache (`<root>/.dvc/cache/runs/`), which DVC writes for every
    stage it completes, in the workspace or in any experiment. None when there is no run cache
    to look in (a cache elsewhere, or no stage ever completed): then nobody can tell."""
    for lock in {lock_file, root / "dvc.lock"}:
        with suppress(OSError):
            if f"md5: {md5}" in lock.read_text():
                return True
    runs = root / ".dvc" / "cache" / "runs"
    if not runs.is_dir():
        return None
    return any(f"md5: {md5}" in entry.read_text() for entry in runs.rglob("*") if entry.is_file())


def content_hash(folder: Path) -> str:
    """md5 over the relative paths and bytes of the files under `folder` (when DVC has no hash)."""
    digest = hashlib.md5()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def prepared_dataset(prepared: Path, out: str = "data/prepared") -> Dataset:
    """The prepared tensors as an MLflow dataset named by their DVC hash: `prepared@<hash>`.

    The hash is dvc.lock's for `out` (the deform stage's output, recorded before training
    runs), so `dvc.lock` and MLflow agree on which data version a run used; outside DVC it is
    an md5 of the files, and the source says so.
    """
    from mlflow.entities import Dataset

    md5 = dvc_hash(out)
    source = {"path": out, "dvc_md5": md5}
    if md5 is None:
        md5 = content_hash(prepared)
        source = {"path": str(prepared), "content_md5": md5}
    short = md5.removesuffix(".dir")[:12]
    return Dataset(
        name=f"prepared@{short}",
        digest=short,
        source_type="dvc" if "dvc_md5" in source else "local",
        source=json.dumps(source),
    )


def log_prepared_dataset(run: Run, prepared: Path, context: str = "training") -> Dataset:
    """Link the run to the prepared data version it used (the UI's Dataset column)."""
    from mlflow.entities import DatasetInput, InputTag

    dataset = prepared_dataset(prepared)
    tags = [InputTag("mlflow.data.context", context)]
    inputs = [DatasetInput(dataset, tags)]
    write(
        run.client.tracking_uri,
        lambda: run.client.log_inputs(run.run_id, datasets=inputs),
        "dataset",
    )
    return dataset
