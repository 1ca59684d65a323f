"""`python -m dogbreeds bench`: training-step and evaluation throughput of every net.

Times what training really runs (`training.loop.train_step`: autocast as in training, NLL loss,
backward, gradient clipping, Adam step, one-cycle step; data already on the device, augmented
there) and evaluation (`training.loop.predict`), per device x net x DeformConv backend x batch
size x precision. Warm-up steps are excluded and the median of several repeats is reported.

This is where `DEFAULT_BACKENDS` in ops/deform_conv.py and `CPU_AUTO_AMP` in
training/devices.py come from: rerun it on new hardware to check them. It imports no DVC or
MLflow, so it runs on a bare GPU box.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dogbreeds.commands import profile
from dogbreeds.data.preprocess import Normalize
from dogbreeds.nets.models import MODELS
from dogbreeds.ops.deform_conv import BACKENDS, runs_on
from dogbreeds.params import AugmentParams
from dogbreeds.training.batches import epoch_plan
from dogbreeds.training.devices import MEMORY_FORMATS, configure_device
from dogbreeds.training.loop import StepContext, predict, train_step
from dogbreeds.training.optim import make_optimizer
from dogbreeds.training.setup import RunSetup


@dataclass
class Result:
    device: str
    net: str
    backend: str  # DeformConv backend, "-" for nets without DeformConv
    batch: int
    amp: str  # off | bf16 | fp16
    memory_format: str  # the weights' layout (devices.MEMORY_FORMATS)
    train_img_s: float
    eval_img_s: float


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_rate(
    step: Callable[[], None], images_per_call: int, device: torch.device, calls: int, repeats: int
) -> float:
    """Median over `repeats` of images/s of `calls` calls of `step` (after one warm-up repeat)."""
    rates = []
    for repeat in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            step()
        synchronize(device)
        if repeat:  # the first repeat is warm-up: allocator, cuDNN autotuning, lazy init
            rates.append(calls * images_per_call / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_one(
    net: str,
    backend: str,
    batch: int,
    amp: str,
    device: torch.device,
    resolution: int,
    steps: int,
    repeats: int,
    memory_format: str = "channels_last",
) -> Result:
    """Throughput of one configuration, on random uint8 data of the real shape."""
    setup = RunSetup(net, device, amp, backend if backend != "-" else "auto")
    model = setup.new_model(7, 1.0, seed=0, memory_format=memory_format)  # not a study run
    n = batch * 4
    images = torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8)
    images, labels = images.to(device), torch.randint(0, 7, (n,)).to(device)
    normalize = Normalize([0.5] * 3, [0.25] * 3, device)
    dtype = setup.dtype
    optimizer, peaks = make_optimizer(model, 1e-3, 1e-4, 0.1)
    total = steps * (repeats + 1) + 1
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    augment = AugmentParams(hflip=0.5, crop="zoom", crop_scale=0.8, crop_pad=0.0, rotation=0.0)
    plan = epoch_plan(n, batch, torch.Generator().manual_seed(0), augment, device)
    calls = iter(range(10**9))

    step = StepContext(model, normalize, optimizer, scheduler, scaler, 0.1, dtype)

    def one_train_step() -> None:
        train_step(step, images, labels, plan[next(calls) % len(plan)])

    def eval_step() -> None:
        predict(model, images[:batch], normalize, batch, dtype)

    model.train()
    train_rate = median_rate(one_train_step, batch, device, steps, repeats)
    eval_rate = median_rate(eval_step, batch, device, steps, repeats)
    return Result(str(device), net, backend, batch, amp, memory_format, train_rate, eval_rate)


def configurations(devices, batches, amps, backends, formats=("channels_last",)):
    """Every (device, net, backend, batch, amp, memory format) to time; the deformable net
    once per backend."""
    for device in devices:
        for batch, amp, memory_format in itertools.product(batches, amps, formats):
            if amp == "fp16" and device.type == "cpu":
                continue  # CPU autocast has no fast fp16 path worth timing
            for net in MODELS:
                for backend in backends if net == "deformable" else ["-"]:
                    if backend != "-" and not runs_on(backend, device):
                        continue  # fused is CPU-only, triton CUDA-only
                    if backend == "torchvision" and amp != "off" and device.type == "cpu":
                        continue  # no bf16 kernel: it upcasts, same as "off"
                    yield device, net, backend, batch, amp, memory_format


def markdown(results: list[Result]) -> str:
    """The results as a table, with each row's train throughput relative to the cnn's."""

    def cell(r: Result) -> tuple:
        return r.device, r.batch, r.amp, r.memory_format

    cnn = {cell(r): r.train_img_s for r in results if r.net == "cnn"}
    lines = [
        "| device | batch | amp | layout | net | DeformConv | train img/s | vs cnn | eval img/s "
        "| eval / train |",
        "|---|---:|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        base = cnn.get(cell(r))
        ratio = f"{r.train_img_s / base:.2f}x" if base else "-"
        lines.append(
            f"| {r.device} | {r.batch} | {r.amp} | {r.memory_format} | {r.net} | {r.backend} "
            f"| {r.train_img_s:,.0f} | {ratio} | {r.eval_img_s:,.0f} "
            f"| {r.eval_img_s / r.train_img_s:.1f} |"
        )
    return "\n".join(lines)


def write_profile(batch: int, resolution: int, out: Path) -> None:
    """`--profile`: each net's per-layer, per-pass table (commands/profile.py) to OUT-profile.md."""
    tables = [profile.markdown(net, profile.profile_net(net, batch, resolution)) for net in MODELS]
    text = "\n\n".join(tables) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + "-profile.md").write_text(text)
    print(text)


def cpu_name() -> str:
    """The CPU's model name (platform.processor() is empty on Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dogbreeds bench", description=__doc__)
    cuda = ["cuda"] if torch.cuda.is_available() else []
    parser.add_argument("--device", nargs="+", default=["cpu", *cuda])
    parser.add_argument("--resolution", type=int, default=64, help="input side (224 * rho)")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--amp", nargs="+", default=["off", "bf16", "fp16"])
    parser.add_argument(
        "--backend", nargs="+", default=[b for b in BACKENDS if b != "auto"],
        help="DeformConv backends to time",
    )  # fmt: skip
    parser.add_argument(
        "--memory-format", nargs="+", default=["channels_last"], choices=list(MEMORY_FORMATS),
        help="the nets' weight layouts to time (training always uses channels_last)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=10, help="steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("bench"), help="writes OUT.json, OUT.md")
    parser.add_argument(
        "--profile", action="store_true",
        help="time each layer's forward, input and weight gradient per memory format (CPU, "
        "float32, the first --batch) instead; writes OUT-profile.md",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        write_profile(args.batch[0], args.resolution, args.out)
        return
    devices = [torch.device(d) for d in args.device]
    for device in devices:
        configure_device(device)
    results = []
    formats = args.memory_format
    for config in configurations(devices, args.batch, args.amp, args.backend, formats):
        device, net, backend, batch, amp, layout = config
        result = bench_one(net, backend, batch, amp, device, args.resolution, args.steps,
                           args.repeats, layout)  # fmt: skip
        print(f"{device} batch {batch} {amp} {layout} {net} {backend}: "
              f"train {result.train_img_s:,.0f} img/s, eval {result.eval_img_s:,.0f} img/s",
              flush=True)  # fmt: skip
        results.append(result)
    table = markdown(results)
    meta = {
        "resolution": args.resolution,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # ATen's kernels: AVX2, ...
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": [asdict(r) for r in results]}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print()
    print(table)


if __name__ == "__main__":
    main()
