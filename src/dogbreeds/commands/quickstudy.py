"""`python -m dogbreeds quickstudy`: the train/evaluate part of the study in one process.

For a bare GPU machine without DVC or MLflow (nothing here imports them): train every
(arch, schedule) of params.yaml with the same engine the train stage uses, score the deformed
and clean test sets, and print one table with accuracies, wall time and throughput. The
DVC pipeline (`dvc repro`) remains the study of record; this measures the GPU speed of
training itself.

`pack` turns `data/prepared/*.pt` into one small tar of JPEGs (quality 95) so the prepared
224-pixel data can travel to such a machine; `run` accepts that tar or a prepared folder.
JPEG is lossy: a packed run's accuracies are close to, not identical with, the pipeline's.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dogbreeds.data.prepared import Split, load_split
from dogbreeds.data.preprocess import Normalize, input_stats
from dogbreeds.params import Params, Schedule, load_params, run_name
from dogbreeds.training.batches import steps_per_epoch
from dogbreeds.training.loop import batch_mean_accuracy, predict, score, train_model
from dogbreeds.training.setup import RunSetup, set_up_run

SPLITS = ("train", "val", "test", "test_clean")  # what training and the test scores need


def pack(prepared: Path, out: Path, quality: int = 95) -> None:
    """Write the splits as JPEGs plus one index.json (labels, ids, breeds) into a tar."""
    index = {}
    with tarfile.open(out, "w") as tar:
        for name in SPLITS:
            split = load_split(prepared / f"{name}.pt")
            index[name] = {"labels": split.labels.tolist(), "ids": split.ids}
            index["breeds"] = split.breeds
            for i, image in enumerate(split.images):
                buffer = io.BytesIO()
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(
                    buffer, "JPEG", quality=quality
                )
                info = tarfile.TarInfo(f"{name}/{i:05d}.jpg")
                info.size = buffer.tell()
                buffer.seek(0)
                tar.addfile(info, buffer)
        blob = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))


def unpack(path: Path) -> dict[str, Split]:
    """The splits of a tar written by `pack`."""
    with tarfile.open(path) as tar:
        index = json.loads(tar.extractfile("index.json").read())
        splits = {}
        for name in SPLITS:
            arrays = [
                np.asarray(Image.open(tar.extractfile(f"{name}/{i:05d}.jpg")).convert("RGB"))
                for i in range(len(index[name]["labels"]))
            ]
            images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
            labels = torch.tensor(index[name]["labels"])
            splits[name] = Split(images, labels, index[name]["ids"], index["breeds"])
    return splits


def load(source: Path) -> dict[str, Split]:
    if source.is_dir():
        return {name: load_split(source / f"{name}.pt") for name in SPLITS}
    return unpack(source)


def run(source: Path, params_path: Path) -> list[dict]:
    """Train and score every (arch, schedule, seed) of params; one result dict per run."""
    params = load_params(params_path)
    splits = load(source)
    mean, std = input_stats(splits["train"].images, params.train.normalize)
    results = []
    for arch in params.train.archs:
        setup = set_up_run(params, arch)
        normalize = Normalize(mean, std, setup.device)
        on_device = {name: split.to(setup.device) for name, split in splits.items()}
        for schedule in params.train.schedules.values():
            for seed in params.train.seeds:
                result = train_and_score(params, setup, schedule, seed, on_device, normalize)
                print(json.dumps({k: v for k, v in result.items() if k != "predicted"}),
                      flush=True)  # fmt: skip
                results.append(result)
    return results


def train_and_score(
    params: Params,
    setup: RunSetup,
    schedule: Schedule,
    seed: int,
    splits: dict[str, Split],
    normalize: Normalize,
) -> dict:
    """One run as the train stage would make it (the same engine, set-up and seeds), timed,
    then scored on val and both test sets, with each split's predicted breeds."""
    model = setup.new_model(len(splits["train"].breeds), params.model.width_mult, seed)
    name = run_name(setup.arch, schedule.name, seed)
    started = time.perf_counter()
    history = train_model(
        model, splits["train"], splits["val"], normalize, schedule, params.train,
        params.model.deformable.offset_lr_mult, seed, desc=name, dtype=setup.dtype,
    )  # fmt: skip
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)
    wall = time.perf_counter() - started
    steps = steps_per_epoch(len(splits["train"].labels), params.train.batch_size)
    images = steps * sum(schedule.epochs) * params.train.batch_size
    result = {
        "run": name,
        "train_acc": history[-1].train_acc,
        "val_acc": history[-1].val_acc,
        "wall_time_s": round(wall, 1),
        "train_img_s": round(images / wall),
        **setup.runtime(),
        "predicted": {},
    }
    eval_batch = params.train.eval_batch_size
    for split_name, key in (("val", "val_acc"), ("test", "test_acc"),
                            ("test_clean", "clean_test_acc")):  # fmt: skip
        split = splits[split_name]
        log_probs = predict(model, split.images, normalize, eval_batch, setup.dtype)
        predicted = log_probs.argmax(dim=1)
        result[key] = score(log_probs, split.labels)[1]
        # the paper's estimator, for comparing with its numbers only
        hits = (predicted == split.labels).cpu()
        result[f"{key}_batch_mean"] = batch_mean_accuracy(hits, eval_batch)
        result["predicted"][split_name] = predicted.tolist()
    return result


def table(results: list[dict]) -> str:
    lines = [
        "| run | amp | train acc | val acc | test acc | clean test acc | wall s | train img/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['run']} | {r['amp']} | {r['train_acc']:.4f} | {r['val_acc']:.4f} "
            f"| {r['test_acc']:.4f} | {r['clean_test_acc']:.4f} | {r['wall_time_s']:.1f} "
            f"| {r['train_img_s']:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dogbreeds quickstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="data/prepared -> a tar of JPEGs")
    p.add_argument("prepared", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (lower: smaller tar)")
    r = sub.add_parser("run", help="train and score every run of params.yaml")
    r.add_argument("source", type=Path, help="a prepared folder or a tar from `pack`")
    r.add_argument("--params", type=Path, default=Path("params.yaml"))
    r.add_argument("--out", type=Path, default=None, help="also write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.prepared, args.out, args.quality)
        return
    started = time.perf_counter()
    results = run(args.source, args.params)
    total = time.perf_counter() - started
    text = (
        table(results)
        + f"\n\nwhole run (loading, {len(results)} trainings, evaluation): {total:.0f} s\n"
    )
    print(text)
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
