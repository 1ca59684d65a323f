"""What the deformable net learned: the size of its offsets, and where its taps sample.

Each DeformConv predicts, per output pixel, a (dy, dx) shift for each of its K*K taps (its
`offset` conv). If the layers adapt to geometry, offsets should be larger on deformed images
than on clean ones. Forward hooks on the `offset` convs read them without touching the model
code. `run_offsets` (called by `stages/offsets.py`) writes, for every trained deformable net,
the mean |offset| per layer on the clean and on the deformed test set
(`metrics/offsets/offsets.json`, read by the report) and a figure of the sampling positions in
the style of the DCN paper's Fig. 5 (`metrics/offsets/offsets-<run>.png`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from dogbreeds.analysis.plots import plot_sampling_positions
from dogbreeds.common.fs import atomic_path, write_json
from dogbreeds.data.prepared import load_split
from dogbreeds.data.preprocess import Normalize
from dogbreeds.ops.deform_conv import DeformConv
from dogbreeds.params import Params, run_name
from dogbreeds.training.checkpoint import load_checkpoint
from dogbreeds.training.loop import predict
from dogbreeds.training.setup import set_up_run

log = logging.getLogger(__name__)

FIGURE_IMAGES = 8  # test images per offsets figure


def deform_layers(model: nn.Module) -> dict[str, DeformConv]:
    """The model's DeformConv layers by module name, in forward order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, DeformConv)}


@contextmanager
def recorded_offsets(model: nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Within the block, every forward appends each DeformConv's offsets (B, 2*K*K, H, W),
    float32 on the CPU, to the list of its layer name."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in deform_layers(model)}
    hooks = [
        layer.offset.register_forward_hook(
            lambda _m, _i, out, name=name: seen[name].append(out.detach().float().cpu())
        )
        for name, layer in deform_layers(model).items()
    ]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def offset_norms(offset: torch.Tensor) -> torch.Tensor:
    """|(dy, dx)| per tap and pixel (B, K*K, H, W) from torchvision's interleaved layout."""
    return torch.sqrt(offset[:, 0::2] ** 2 + offset[:, 1::2] ** 2)


def mean_offsets(
    model: nn.Module, images: torch.Tensor, normalize: Normalize, batch_size: int
) -> dict[str, float]:
    """Mean |offset| in pixels of each layer's input, over taps, pixels and images."""
    with recorded_offsets(model) as seen:
        predict(model, images, normalize, batch_size)
    return {
        name: torch.cat([offset_norms(o).flatten() for o in batches]).mean().item()
        for name, batches in seen.items()
    }


def sampling_positions(offset: torch.Tensor, row: int, col: int, side: int) -> torch.Tensor:
    """The K*K (y, x) positions, in pixels of a side x side input image, where one layer
    samples for its output pixel (row, col); offset is one image's (2*K*K, H, W)."""
    taps, height = offset.shape[0] // 2, offset.shape[1]
    k = int(taps**0.5)
    grid = torch.arange(k, dtype=torch.float32) - (k - 1) / 2  # -1, 0, 1 for K = 3
    base_y = (row + grid).repeat_interleave(k)  # tap order: row-major over (ki, kj)
    base_x = (col + grid).repeat(k)
    y = base_y + offset[0::2, row, col]
    x = base_x + offset[1::2, row, col]
    scale = side / height  # feature pixel -> image pixel (centres aligned)
    return torch.stack([(y + 0.5) * scale - 0.5, (x + 0.5) * scale - 0.5], dim=1)


def figure_positions(
    model: nn.Module, images: torch.Tensor, normalize: Normalize
) -> list[dict[str, torch.Tensor]]:
    """Per image, each layer's sampling positions for the centre pixel of its output (the dog
    sits near the centre of most photos): {layer: (K*K, 2)}."""
    with recorded_offsets(model) as seen:
        predict(model, images, normalize, len(images))
    side = images.shape[-1]
    positions = []
    for i in range(len(images)):
        per_layer = {}
        for name, (offset,) in seen.items():
            h = offset.shape[-1]
            per_layer[name] = sampling_positions(offset[i], h // 2, h // 2, side)
        positions.append(per_layer)
    return positions


def run_offsets(
    params: Params,
    prepared: Path = Path("data/prepared"),
    models_dir: Path = Path("models"),
    out: Path = Path("metrics/offsets"),
) -> dict:
    """Offsets of every trained deformable net: mean |offset| per layer (clean, deformed) and a
    figure each. Returns {run: {layer: {"clean": x, "deformed": y}}} (empty without any)."""
    device = set_up_run(params, "deformable").device
    clean, deformed = load_split(prepared / "test_clean.pt"), load_split(prepared / "test.pt")
    results: dict = {}
    with atomic_path(out) as folder:
        folder.mkdir()
        if "deformable" in params.train.archs:
            for schedule in params.train.schedules:
                for seed in params.train.seeds:
                    name = run_name("deformable", schedule, seed)
                    model, meta = load_checkpoint(models_dir / f"{name}.pt", device)
                    normalize = Normalize(meta["mean"], meta["std"], device)
                    batch = params.train.eval_batch_size
                    on_clean = mean_offsets(model, clean.images.to(device), normalize, batch)
                    on_deformed = mean_offsets(model, deformed.images.to(device), normalize, batch)
                    results[name] = {
                        layer: {"clean": on_clean[layer], "deformed": on_deformed[layer]}
                        for layer in on_clean
                    }
                    picked = slice(0, FIGURE_IMAGES)
                    plot_sampling_positions(
                        [clean.images[picked], deformed.images[picked]],
                        [
                            figure_positions(model, clean.images[picked].to(device), normalize),
                            figure_positions(model, deformed.images[picked].to(device), normalize),
                        ],
                        ["clean", "deformed"],
                        folder / f"offsets-{name}.png",
                        f"{name}: sampling positions of each DeformConv for the centre pixel",
                    )
                    log.info("%s: mean |offset| clean %s, deformed %s", name, on_clean, on_deformed)
        write_json(folder / "offsets.json", results)
    return results
