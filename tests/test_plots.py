"""Figures: each drawing function writes a PNG of the expected size from its inputs."""

from __future__ import annotations

import pandas as pd
import torch
from PIL import Image

from dogbreeds.analysis import plots
from dogbreeds.data.prepared import Split
from dogbreeds.training.history import EpochRecord


def split(n: int, value: int) -> Split:
    images = torch.full((n, 3, 8, 8), value, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    return Split(images, labels, [f"id{i}" for i in range(n)], ["a", "b", "c"])


def test_preview_shows_clean_over_deformed_for_several_breeds(tmp_path):
    path = tmp_path / "preview.png"
    plots.save_preview(split(6, 200), split(6, 20), count=4, path=path)
    width, height = Image.open(path).size
    assert width == 4 * 180 and height == 400  # 1.8 in per column, 4 in tall, 100 dpi


def test_preview_picks_breeds_in_turn():
    table = pd.DataFrame(
        {"id": ["a1", "a2", "a3", "b1", "c1"], "label": [0, 0, 0, 1, 2], "split": "test"}
    )
    picked = plots.preview_indices(table, 4)
    assert [table.label[i] for i in picked] == [0, 1, 2, 0]


def test_accuracy_and_confusion_figures_are_pngs(tmp_path):
    history = [EpochRecord(e, 1 + (e > 2), 1e-3, 1.0, 0.1 * e, 1.0, 0.1 * e) for e in (1, 2, 3)]
    plots.plot_accuracy(history, tmp_path / "sub" / "acc.png", "cnn")
    plots.plot_confusion(
        torch.eye(3, dtype=torch.long) * 5, ["a", "b", "c"], tmp_path / "c.png", "t"
    )
    for name in ("sub/acc.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
