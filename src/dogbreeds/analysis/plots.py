"""Figures: accuracy curves, confusion matrices and the deformation preview, as PNG files.

`dvc plots show` writes HTML that loads its chart library from the network, so every figure a
reader needs is also drawn here with matplotlib (Agg backend: no display needed). Only stages
that write figures import this module, so a change of style never makes a training stale.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from dogbreeds.data.prepared import Split  # noqa: E402
from dogbreeds.training.history import EpochRecord  # noqa: E402


def plot_accuracy(history: list[EpochRecord], path: Path, title: str) -> None:
    """Train and val accuracy per epoch, stages split by dashes: the report's Figures 1-3."""
    epochs = [r.epoch for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [r.train_acc for r in history], "-o", markersize=3, label="train")
    ax.plot(epochs, [r.val_acc for r in history], "-o", markersize=3, label="val (deformed)")
    for before, after in zip(history, history[1:], strict=False):
        if after.stage != before.stage:
            ax.axvline(before.epoch + 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="epoch", ylabel="accuracy", title=title, ylim=(0, 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: torch.Tensor, breeds: list[str], path: Path, title: str) -> None:
    """The confusion matrix as a PNG with counts in the cells (`dvc plots show` needs the web)."""
    counts = confusion.numpy()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(breeds)), breeds, rotation=45, ha="right")
    ax.set_yticks(range(len(breeds)), breeds)
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    for row in range(len(breeds)):
        for col in range(len(breeds)):
            value = counts[row, col]
            color = "white" if value > counts.max() / 2 else "black"
            ax.text(col, row, str(value), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def preview_indices(table: pd.DataFrame, count: int) -> list[int]:
    """Up to `count` test images, taking breeds in turn so the grid shows several breeds."""
    test = table[table["split"] == "test"].reset_index(drop=True)
    queues = [list(g.sort_values("id").index) for _, g in test.groupby("label")]
    picked: list[int] = []
    while len(picked) < count and any(queues):
        picked += [q.pop(0) for q in queues if q][: count - len(picked)]
    return picked


def save_preview(deformed: Split, clean: Split, count: int, path: Path) -> None:
    """A 2-row grid: the same test images clean (top) and deformed (bottom)."""
    frame = pd.DataFrame({"id": deformed.ids, "label": deformed.labels.numpy(), "split": "test"})
    picked = preview_indices(frame, count)
    columns = max(1, len(picked))
    fig, axes = plt.subplots(2, columns, figsize=(1.8 * columns, 4.0), squeeze=False)
    for col, i in enumerate(picked):
        breed = deformed.breeds[int(deformed.labels[i])]
        for row, (data, name) in enumerate(((clean, "clean"), (deformed, "deformed"))):
            ax = axes[row][col]
            ax.imshow(data.images[i].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(breed.replace("_", " "), fontsize=8)
            if col == 0:
                ax.set_ylabel(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_robustness(curves: pd.DataFrame, path: Path) -> None:
    """Accuracy against deformation strength: one panel per (schedule, kind), one line per net,
    the 95% CI over seeds as a band. `curves` has the columns of the report's robustness TSV:
    schedule, kind, arch, strength, mean, low, high (low/high NaN with one seed: no band)."""
    schedules = list(dict.fromkeys(curves["schedule"]))
    kinds = list(dict.fromkeys(curves["kind"]))
    fig, axes = plt.subplots(
        len(schedules),
        len(kinds),
        figsize=(3.2 * len(kinds), 2.8 * len(schedules)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for row, schedule in enumerate(schedules):
        for col, kind in enumerate(kinds):
            ax = axes[row][col]
            panel = curves[(curves["schedule"] == schedule) & (curves["kind"] == kind)]
            for arch, line in panel.groupby("arch", sort=False):
                line = line.sort_values("strength")
                ax.plot(line["strength"], line["mean"], "-o", markersize=3, label=arch)
                ax.fill_between(line["strength"], line["low"], line["high"], alpha=0.2)
            ax.set_title(f"{schedule}: {kind}", fontsize=9)
            ax.grid(alpha=0.3)
            if row == len(schedules) - 1:
                ax.set_xlabel("deformation strength")
            if col == 0:
                ax.set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sampling_positions(
    image_rows: list[torch.Tensor],
    position_rows: list[list[dict[str, torch.Tensor]]],
    row_titles: list[str],
    path: Path,
    title: str,
) -> None:
    """Images (uint8, one row per entry of image_rows) with each DeformConv layer's sampling
    positions drawn over them in its own colour, like the DCN paper's Fig. 5.
    position_rows[r][i] maps layer name -> (K*K, 2) (y, x) image pixels for image i of row r."""
    cols = max(len(images) for images in image_rows)
    fig, axes = plt.subplots(
        len(image_rows), cols, figsize=(1.9 * cols, 2.1 * len(image_rows)), squeeze=False
    )
    for r, (images, positions) in enumerate(zip(image_rows, position_rows, strict=True)):
        for i in range(cols):
            ax = axes[r][i]
            ax.axis("off")
            if i >= len(images):
                continue
            side = images[i].shape[-1]
            ax.imshow(images[i].permute(1, 2, 0).numpy())
            for layer, points in positions[i].items():
                ax.scatter(points[:, 1], points[:, 0], s=8, label=layer)
            ax.set_xlim(-0.5, side - 0.5)  # taps outside the image (zeros there) are not drawn
            ax.set_ylim(side - 0.5, -0.5)
            if i == 0:
                ax.set_title(row_titles[r], fontsize=9, loc="left")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
