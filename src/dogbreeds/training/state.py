"""A training stopped after an epoch, complete enough to continue exactly.

After every epoch the loop can hand out a `TrainState`: weights, optimiser, scheduler, scaler,
every random generator and the history so far. `train_model` continues from one
(`TrainingHooks.state`) and ends with exactly the numbers of an uninterrupted run
(`dogbreeds.training.resume` keeps it on disk).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from dogbreeds.training.history import EpochRecord


@dataclass
class TrainState:
    """A schedule stopped after `len(history)` epochs, complete enough to continue exactly.

    Every field is tensors, numbers, strings, lists and dicts, so `torch.save` writes it and
    `torch.load(weights_only=True)` reads it back. The optimiser and scheduler belong to the
    stage of the last finished epoch; a resume that starts a new stage does not need them.
    """

    history: list[EpochRecord]
    model: dict  # state_dict, including BatchNorm statistics
    optimizer: dict
    scheduler: dict
    scaler: dict
    rng: dict  # see capture_rng

    @property
    def epochs_done(self) -> int:
        return len(self.history)


def capture_rng(generator: torch.Generator) -> dict:
    """Every random stream a run may draw from, as tensors and plain numbers.

    The data generator orders and augments batches; torch's global CPU and CUDA streams,
    numpy's and Python's are kept too, so that no draw anywhere repeats or shifts on resume.
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    return {
        "data": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }  # fmt: skip


def restore_rng(rng: dict, generator: torch.Generator) -> None:
    """Put back what `capture_rng` took."""
    generator.set_state(rng["data"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
