"""quickstudy's transport tar: prepared splits -> JPEGs -> the same splits, lossy only in pixels."""

from __future__ import annotations

import tarfile

import torch

from dogbreeds.commands import quickstudy
from dogbreeds.data.prepared import Split, save_split


def smooth_images(n: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 images JPEG keeps well: a random colour per image plus a gentle ramp."""
    ramp = torch.linspace(0, 60, side).view(1, 1, 1, side)
    colour = torch.randint(0, 190, (n, 3, 1, 1), generator=generator).float()
    return (colour + ramp).expand(n, 3, side, side).round().to(torch.uint8).contiguous()


def test_pack_round_trips_labels_ids_and_pixels(tmp_path):
    generator = torch.Generator().manual_seed(0)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    breeds = [f"breed{i}" for i in range(7)]
    written = {}
    for name, n in (("train", 9), ("val", 4), ("test", 5), ("test_clean", 5)):
        split = Split(smooth_images(n, 24, generator), torch.arange(n) % 7,
                      [f"{name}-{i}" for i in range(n)], breeds)  # fmt: skip
        save_split(prepared / f"{name}.pt", split)
        written[name] = split
    sizes = {}
    for quality in (95, 60):
        out = tmp_path / f"q{quality}.tar"
        quickstudy.main(["pack", str(prepared), str(out), "--quality", str(quality)])
        with tarfile.open(out) as tar:  # JPEG bytes (the tar itself pads to 10 kB records)
            sizes[quality] = sum(m.size for m in tar.getmembers() if m.name.endswith(".jpg"))
        splits = quickstudy.unpack(out)
        for name, split in written.items():
            got = splits[name]
            assert got.ids == split.ids and got.breeds == breeds
            assert torch.equal(got.labels, split.labels)
            assert got.images.shape == split.images.shape and got.images.dtype == torch.uint8
            error = (got.images.float() - split.images.float()).abs().mean()
            assert error < (2 if quality == 95 else 6), (name, quality, error)
    assert sizes[60] < sizes[95]
