"""The paper's numbers, transcribed as data: results tables 4.3.1-4.3.3 and the appendix.

Our report prints these beside our own; nothing here is computed.
"""

from __future__ import annotations

import math

from dogbreeds.params import Schedule

PAPER_SCHEDULES = ((20, 14, 6), (50, 7, 3), (50, 14, 6))  # the tables' columns (epochs per stage)


PAPER_MAX_LR = (0.01, 0.001, 0.0001)  # the same for every column


ROWS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


PAPER_RESULTS: dict[str, dict[str, tuple[float, float, float]]] = {
    "cnn": {  # DogBreedClassificationCNN Results
        "train_loss": (0.9680, 0.5488, 0.5086),
        "train_acc": (0.7050, 0.8925, 0.9050),
        "val_loss": (1.3285, 1.4217, 1.2668),
        "val_acc": (0.5333, 0.5333, 0.5646),
        "test_loss": (1.3299, 1.2469, 1.2487),
        "test_acc": (0.5101, 0.5901, 0.5923),
    },
    "dsc": {  # DogBreedClassificationDSC Results
        "train_loss": (1.1875, 0.5744, 0.6265),
        "train_acc": (0.6133, 0.8508, 0.8592),
        "val_loss": (1.4953, 1.1783, 1.1861),
        "val_acc": (0.4542, 0.5708, 0.5521),
        "test_loss": (1.3417, 1.3159, 1.3388),
        "test_acc": (0.5148, 0.5622, 0.5471),
    },
    "deformable": {  # DogBreedClassificationDeformableCNN Results
        "train_loss": (0.8231, 0.2878, 0.2178),
        "train_acc": (0.7700, 0.9467, 0.9883),
        "val_loss": (1.1414, 1.2395, 1.3552),
        "val_acc": (0.6562, 0.5583, 0.6250),
        "test_loss": (1.4600, 1.5843, 1.3622),
        "test_acc": (0.4649, 0.5044, 0.5682),
    },
}


PAPER_PARAMS = {"cnn": 585_383, "dsc": 74_663, "deformable": 621_725}  # appendix, at 224x224


PAPER_RESOLUTION = 224


# The report's class names (tests/test_report.py checks they are the nets' own class names).
NET_NAMES = {
    "cnn": "DogBreedClassificationCNN",
    "dsc": "DogBreedClassificationDSC",
    "deformable": "DogBreedClassificationDeformableCNN",
}


def paper_column(schedule: Schedule) -> int | None:
    """Which of the paper's columns a schedule reproduces (same epochs and max_lr), if any."""
    if tuple(schedule.epochs) not in PAPER_SCHEDULES:
        return None
    pairs = zip(schedule.max_lr, PAPER_MAX_LR, strict=True)  # same length: epochs matched
    if not all(math.isclose(ours, theirs) for ours, theirs in pairs):
        return None
    return PAPER_SCHEDULES.index(tuple(schedule.epochs))


def schedule_label(schedule: Schedule) -> str:
    """'20/14/6', plus the max_lr when it is not the paper's."""
    label = "/".join(str(e) for e in schedule.epochs)
    if paper_column(schedule) is None and tuple(schedule.epochs) in PAPER_SCHEDULES:
        label += " @ " + "/".join(f"{lr:g}" for lr in schedule.max_lr)
    return label
