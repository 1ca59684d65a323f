"""`python -m dogbreeds bench --profile`: where one training step's time goes, layer by layer.

Each convolution and BatchNorm of a net is timed alone on its real input shape (captured by
forward hooks on one pass of a batch), per memory format: the forward, the input gradient and
the weight gradient separately (`torch.autograd.grad` for one of them at a time; the first
layer's input is data, so training never computes its input gradient), then the rest of a
step: the augmentation's `grid_sample`, gradient clipping and the Adam step. The table says
which pass of which layer is slow and whether channels_last or contiguous wins it: the memory
format choice in `training.devices` comes from this table, per resolution.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from dogbreeds.nets.models import build_model
from dogbreeds.ops.deform_conv import DeformConv
from dogbreeds.training.batches import augment
from dogbreeds.training.optim import make_optimizer

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass
class Timing:
    layer: str  # module name in the net, or a step part
    shape: str  # input shape, (B, C, H, W)
    part: str  # forward | input grad | weight grad | forward+backward | step
    ms: dict[str, float]  # memory format -> median milliseconds


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn` in ms over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every Conv2d, BatchNorm2d and DeformConv of `model` for the batch x."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            seen.setdefault(name, args[0])  # returns None: a hook's return replaces the output

        return hook

    hooks = [
        module.register_forward_hook(keep(name))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, DeformConv))
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def time_conv(conv: nn.Conv2d, x: torch.Tensor, first: bool, repeats: int) -> list[Timing]:
    """Forward, input gradient (not for the first layer) and weight gradient of one conv."""
    rows = {"forward": {}, "weight grad": {}} | ({} if first else {"input grad": {}})
    for fmt_name, fmt in FORMATS.items():
        layer = conv.to(memory_format=fmt)
        inp = x.detach().contiguous(memory_format=fmt).requires_grad_(not first)
        grad = torch.randn_like(layer(inp))

        def forward(layer=layer, inp=inp) -> None:
            with torch.no_grad():
                layer(inp)

        def gradient(wrt: torch.Tensor, layer=layer, inp=inp, grad=grad) -> None:
            torch.autograd.grad(layer(inp), wrt, grad)

        ms = rows["forward"][fmt_name] = median_ms(forward, repeats)
        # each gradient's time is net of the forward it needs
        rows["weight grad"][fmt_name] = median_ms(partial(gradient, layer.weight), repeats) - ms
        if not first:
            rows["input grad"][fmt_name] = median_ms(partial(gradient, inp), repeats) - ms
    shape = "x".join(str(d) for d in x.shape)
    return [Timing("", shape, part, ms) for part, ms in rows.items()]


def time_whole(module: nn.Module, x: torch.Tensor, repeats: int) -> Timing:
    """Forward and backward (input and weights) of a BatchNorm (training mode) or a
    DeformConv (its offset conv, sampling and column conv together)."""
    ms = {}
    for fmt_name, fmt in FORMATS.items():
        inp = x.detach().contiguous(memory_format=fmt).requires_grad_(True)
        module.train()

        def step(inp=inp) -> None:
            module(inp).sum().backward()

        ms[fmt_name] = median_ms(step, repeats)
    return Timing("", "x".join(str(d) for d in x.shape), "forward+backward", ms)


def profile_net(net: str, batch: int, resolution: int, repeats: int = 5) -> list[Timing]:
    """Every conv and BatchNorm of `net`, then the augmentation, clipping and Adam, float32 CPU."""
    torch.manual_seed(0)
    model = build_model(net)
    x = torch.rand(batch, 3, resolution, resolution)
    inputs = layer_inputs(model, x)
    modules = dict(model.named_modules())
    first = next(iter(inputs))
    timings = []
    inside = {f"{name}." for name, m in modules.items() if isinstance(m, DeformConv)}
    for name, inp in inputs.items():
        module = modules[name]
        if any(name.startswith(prefix) for prefix in inside):
            continue  # a DeformConv's own offset conv: timed with its DeformConv
        if isinstance(module, nn.Conv2d):
            rows = time_conv(module, inp, name == first, repeats)
        else:
            rows = [time_whole(module, inp, repeats)]
        for row in rows:
            row.layer = name
        timings += rows

    theta = torch.eye(2, 3).repeat(batch, 1, 1) * 0.9
    ms = {f: median_ms(lambda f=f: augment(x.contiguous(memory_format=FORMATS[f]), theta), repeats)
          for f in FORMATS}  # fmt: skip
    timings.append(Timing("augment (grid_sample)", "x".join(map(str, x.shape)), "step", ms))
    model(x).sum().backward()
    ms = {"contiguous": median_ms(lambda: nn.utils.clip_grad_value_(model.parameters(), 0.1),
                                  repeats)}  # fmt: skip
    timings.append(Timing("gradient clipping", "-", "step", ms))
    optimizer, _ = make_optimizer(model, 1e-3, 1e-4, 0.1)
    ms = {"contiguous": median_ms(optimizer.step, repeats)}
    timings.append(Timing("Adam step", "-", "step", ms))
    return timings


def markdown(net: str, timings: list[Timing]) -> str:
    """One row per layer and pass: ms per format and which format wins."""
    lines = [
        f"| {net}: layer | input | pass | contiguous ms | channels_last ms | faster |",
        "|---|---|---|---:|---:|---|",
    ]
    for t in timings:
        a, b = t.ms.get("contiguous"), t.ms.get("channels_last")
        faster = "-" if a is None or b is None else ("channels_last" if b < a else "contiguous")
        cells = [f"{v:.2f}" if v is not None else "-" for v in (a, b)]
        lines.append(f"| {t.layer} | {t.shape} | {t.part} | {cells[0]} | {cells[1]} | {faster} |")
    totals = {f: sum(t.ms.get(f, t.ms.get("contiguous", 0)) for t in timings) for f in FORMATS}
    lines.append(f"| total | | | {totals['contiguous']:.1f} | {totals['channels_last']:.1f} | |")
    return "\n".join(lines)
