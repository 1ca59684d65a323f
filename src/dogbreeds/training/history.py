"""A training run's per-epoch history: the record type and its TSV file (DVC's plots file)."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from dogbreeds import DogbreedsError
from dogbreeds.common.fs import atomic_path


class HistoryError(DogbreedsError):
    """A history file is missing or malformed; the message names it."""


@dataclass
class EpochRecord:
    """One row of the history: what the report's curves and tables are made of."""

    epoch: int  # global, counting across stages from 1
    stage: int  # 1-based stage of the schedule
    lr: float  # the base group's lr at the epoch's last step
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float

    def metrics(self) -> dict[str, float]:
        """What MLflow logs at step = epoch."""
        return {k: v for k, v in asdict(self).items() if k != "epoch"}

    def summary(self) -> dict[str, float]:
        """A training's final numbers, as the train stage's metrics JSON starts (the last
        epoch's record, `epochs` counting every epoch trained)."""
        return {
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            "epochs": self.epoch,
        }


COLUMNS = tuple(f.name for f in fields(EpochRecord))
TYPES = {f.name: int if f.type == "int" else float for f in fields(EpochRecord)}


def write_history(path: Path, history: list[EpochRecord]) -> None:
    """The per-epoch history as a TSV (x: epoch), floats to 6 significant digits."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as out:
        writer = csv.DictWriter(out, COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for record in history:
            row = asdict(record)
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


def read_history(path: Path) -> list[EpochRecord]:
    """Read a TSV written by `write_history`."""
    if not path.exists():
        raise HistoryError(f"{path}: not found (run the train stage first)")
    with path.open(newline="") as src:
        reader = csv.DictReader(src, delimiter="\t")
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise HistoryError(f"{path}: columns {reader.fieldnames}, expected {list(COLUMNS)}")
        try:
            return [EpochRecord(**{k: TYPES[k](row[k]) for k in COLUMNS}) for row in reader]
        except (TypeError, ValueError) as exc:
            raise HistoryError(f"{path}: bad value ({exc})") from None
