"""The training package (`dogbreeds.training`: loop, optim, batches, devices) and the
augmentation it draws from `data.preprocess`: one-cycle stages, clipping, augmentation, batches,
the epoch loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datagen import tiny_params
from torch import nn

from dogbreeds.common.progress import RunProgress
from dogbreeds.data import preprocess
from dogbreeds.data.prepared import Split, load_split
from dogbreeds.nets.models import build_model, offset_parameters
from dogbreeds.params import AugmentParams, OneCycleParams, Schedule
from dogbreeds.training import batches, devices, loop, optim

CPU = torch.device("cpu")


def aug(**changes) -> AugmentParams:
    """The study's default augmentation with some fields changed."""
    base = {"hflip": 0.5, "crop": "zoom", "crop_scale": 0.8, "crop_pad": 0.0, "rotation": 0.0}
    return AugmentParams(**(base | changes))


def load_splits(prepared: Path) -> tuple[Split, Split, preprocess.Normalize]:
    train = load_split(prepared / "train.pt")
    val = load_split(prepared / "val.pt")
    mean, std = preprocess.channel_stats(train.images)
    return train, val, preprocess.Normalize(mean, std, torch.device("cpu"))


# ----------------------------------------------------------------------------- the schedule


def test_one_cycle_warms_up_to_max_lr_then_anneals():
    model = build_model("deformable", width_mult=0.25)
    optimizer, peaks = optim.make_optimizer(model, 0.01, 1e-4, offset_lr_mult=0.1)
    shape = OneCycleParams(pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    scheduler = optim.one_cycle(optimizer, peaks, epochs=2, steps=10, shape=shape)
    base, offset = [], []
    for _ in range(20):
        base.append(optimizer.param_groups[0]["lr"])
        offset.append(optimizer.param_groups[1]["lr"])
        optimizer.step()
        scheduler.step()

    peak = base.index(max(base))
    assert peaks == [0.01, pytest.approx(0.001)]
    assert base[0] == pytest.approx(0.01 / 25)  # starts at max_lr / div_factor
    assert max(base) == pytest.approx(0.01)
    assert peak == 6 - 1  # 30% of 20 steps warm up
    assert all(a < b for a, b in zip(base[:peak], base[1 : peak + 1], strict=True))
    assert all(a > b for a, b in zip(base[peak:-1], base[peak + 1 :], strict=True))
    assert base[-1] == pytest.approx(0.01 / 25 / 1e4)  # ends at initial lr / final_div_factor
    assert offset == pytest.approx([lr * 0.1 for lr in base])  # offsets follow at lr * mult


def test_one_cycle_shape_comes_from_params():
    model = build_model("cnn", width_mult=0.25)
    optimizer, peaks = optim.make_optimizer(model, 0.01, 1e-4, offset_lr_mult=0.1)
    shape = OneCycleParams(pct_start=0.5, div_factor=10.0, final_div_factor=100.0)
    scheduler = optim.one_cycle(optimizer, peaks, epochs=2, steps=10, shape=shape)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.001)  # max_lr / 10
    assert lrs.index(max(lrs)) == 10 - 1  # half of 20 steps warm up
    assert lrs[-1] == pytest.approx(0.001 / 100)


def test_offset_convs_get_their_own_group_and_the_rest_one():
    model = build_model("deformable", width_mult=0.25)
    optimizer, _ = optim.make_optimizer(model, 0.01, 1e-4, offset_lr_mult=0.1)
    base, offsets = (group["params"] for group in optimizer.param_groups)
    assert {id(p) for p in offsets} == {id(p) for p in offset_parameters(model)}
    assert len(base) + len(offsets) == len(list(model.parameters()))
    plain, _ = optim.make_optimizer(build_model("cnn"), 0.01, 1e-4, offset_lr_mult=0.1)
    assert len(plain.param_groups) == 1


def test_adam_is_fused_on_cpu_and_steps_like_the_loop_version():
    """The fused CPU kernel is a speed choice only: under a one-cycle schedule (lr and beta1
    moving every step) it follows torch's per-tensor Adam to float32 rounding."""
    torch.manual_seed(0)
    fused_net = build_model("deformable", width_mult=0.25)
    loop_net = build_model("deformable", width_mult=0.25)
    loop_net.load_state_dict(fused_net.state_dict())
    start = [p.detach().clone() for p in fused_net.parameters()]
    fused, peaks = optim.make_optimizer(fused_net, 0.01, 1e-4, offset_lr_mult=0.1)
    assert fused.defaults["fused"] and len(fused.param_groups) == 2
    offsets = {id(p) for p in offset_parameters(loop_net)}
    groups = [
        {"params": [p for p in loop_net.parameters() if id(p) not in offsets], "lr": 0.01},
        {"params": offset_parameters(loop_net), "lr": 0.001},
    ]
    loop = torch.optim.Adam(groups, weight_decay=1e-4, foreach=False, fused=False)
    shape = OneCycleParams(pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    for net, opt in ((fused_net, fused), (loop_net, loop)):
        schedule = optim.one_cycle(opt, peaks, 1, 6, shape)
        for step in range(6):
            generator = torch.Generator().manual_seed(step)
            for p in net.parameters():
                p.grad = torch.randn(p.shape, generator=generator)
            opt.step()
            schedule.step()
    assert fused.param_groups[1]["betas"] == loop.param_groups[1]["betas"] != (0.95, 0.999)
    for a, b, before in zip(fused_net.parameters(), loop_net.parameters(), start, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(a, before, rtol=0, atol=1e-5)  # the steps did move it


def test_each_stage_is_one_cycle_at_its_max_lr(prepared):
    train, val, normalize = load_splits(prepared)
    params = tiny_params()
    schedule = Schedule("s", epochs=[2, 1, 1], max_lr=[0.01, 0.001, 0.0001])
    torch.manual_seed(0)
    model = build_model("cnn", width_mult=0.25)
    history = loop.train_model(model, train, val, normalize, schedule, params.train, 0.1, seed=0)

    assert [r.epoch for r in history] == [1, 2, 3, 4]
    assert [r.stage for r in history] == [1, 1, 2, 3]
    # The last step of every stage runs at that stage's max_lr / 25 / 1e4 ...
    assert [history[i].lr for i in (1, 2, 3)] == pytest.approx(
        [lr / 25 / 1e4 for lr in schedule.max_lr]
    )
    # ... and halfway through the first stage the lr is still well above that.
    assert history[0].lr > 100 * history[1].lr


def test_weights_carry_over_between_stages(prepared, monkeypatch):
    train, val, normalize = load_splits(prepared)
    torch.manual_seed(0)
    model = build_model("cnn", width_mult=0.25)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    after_epoch, at_stage_start = [], []

    make_optimizer = optim.make_optimizer

    def spy(model, *args, **kwargs):
        at_stage_start.append({k: v.clone() for k, v in model.state_dict().items()})
        return make_optimizer(model, *args, **kwargs)

    monkeypatch.setattr(loop, "make_optimizer", spy)
    loop.train_model(
        model,
        train,
        val,
        normalize,
        Schedule("s", [1, 1], [0.01, 0.001]),
        tiny_params().train,
        offset_lr_mult=0.1,
        seed=0,
        hooks=Snapshots(model, after_epoch),
    )

    assert len(at_stage_start) == 2
    for key in initial:  # stage 2 starts from where stage 1 ended, not from scratch
        assert torch.equal(at_stage_start[1][key], after_epoch[0][key])
    assert not torch.equal(at_stage_start[1]["fc.weight"], initial["fc.weight"])


class Snapshots(loop.TrainingHooks):
    """Hooks that copy the weights after every epoch."""

    def __init__(self, model, into: list) -> None:
        self.model, self.into = model, into

    def epoch_done(self, record) -> None:
        self.into.append({k: v.clone() for k, v in self.model.state_dict().items()})


def test_gradients_are_clipped_by_value_before_each_step(prepared, monkeypatch):
    train, val, normalize = load_splits(prepared)
    clip = 1e-4  # far below the raw gradients of an untrained net
    raw, applied = [], []
    make_optimizer = optim.make_optimizer

    def with_hooks(model, *args, **kwargs):
        optimizer, peaks = make_optimizer(model, *args, **kwargs)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for p in params:
            p.register_hook(lambda grad: raw.append(grad.abs().max().item()))
        optimizer.register_step_pre_hook(
            lambda *_: applied.append(max(p.grad.abs().max().item() for p in params))
        )
        return optimizer, peaks

    monkeypatch.setattr(loop, "make_optimizer", with_hooks)
    torch.manual_seed(0)
    model = build_model("cnn", width_mult=0.25)
    tp = tiny_params(**{"train.grad_clip": clip}).train
    loop.train_model(model, train, val, normalize, Schedule("s", [1], [0.01]), tp, 0.1, seed=0)

    assert max(raw) > 10 * clip
    assert applied and max(applied) == pytest.approx(clip)


# ----------------------------------------------------------------------------- data helpers


def test_augment_flip_only_mirrors_exactly():
    x = torch.rand(16, 3, 8, 8)
    theta = batches.augment_thetas(
        16, torch.Generator().manual_seed(0), aug(hflip=0.5, crop_scale=1.0)
    )
    out = batches.augment(x, theta)
    flipped = [torch.allclose(o, xi.flip(-1), atol=1e-6) for o, xi in zip(out, x, strict=True)]
    kept = [torch.allclose(o, xi, atol=1e-6) for o, xi in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < 16


def test_augment_crop_zooms_in_at_a_seeded_position():
    """On a coordinate ramp (pixel value = its x or y index), a crop of side s at offset t
    maps output pixel i to input coordinate t + s * i: check both the scale and the position."""
    side = 32
    ramp = torch.arange(side, dtype=torch.float32)
    x = torch.stack([ramp.expand(side, side), ramp[:, None].expand(side, side)])  # (2, H, W)
    x = x.unsqueeze(0).repeat(64, 1, 1, 1)  # x-ramp, y-ramp channels

    def draw():
        return batches.augment_thetas(
            64, torch.Generator().manual_seed(1), aug(hflip=0, crop_scale=0.5)
        )

    a, b = batches.augment(x, draw()), batches.augment(x, draw())
    assert torch.equal(a, b)  # seeded

    inner = slice(4, side - 4)  # away from the border, where clamping flattens the ramp
    for out in a:
        for channel in (0, 1):
            ramp_out = out[channel].mean(dim=channel)[inner]  # values along that axis
            steps = ramp_out.diff()
            scale = steps.mean().item()
            assert 0.5 - 1e-3 <= scale <= 1 + 1e-3  # zoom in: input side fraction s in [0.5, 1]
            assert torch.allclose(steps, torch.full_like(steps, scale), atol=1e-3)  # linear
            # The crop stays inside the image: first and last output pixels map inside it.
            first = ramp_out[0].item() - 4 * scale
            last = first + (side - 1) * scale
            assert first >= -0.5 - 1e-3 and last <= side - 0.5 + 1e-3
    scales = torch.tensor([o[0].mean(dim=0)[inner].diff().mean().item() for o in a])
    starts = torch.tensor([o[0].mean(dim=0)[4].item() for o in a])
    assert scales.std() > 0.05 and starts.std() > 0.5  # both drawn per image, not fixed
    assert batches.augment_thetas(64, torch.Generator(), aug(hflip=0, crop_scale=1.0)) is None
    assert batches.augment(x, None) is x


def ramp_images(n: int, side: int) -> torch.Tensor:
    """(n, 2, side, side): channel 0 holds each pixel's x index, channel 1 its y index."""
    ramp = torch.arange(side, dtype=torch.float32)
    x = torch.stack([ramp.expand(side, side), ramp[:, None].expand(side, side)])
    return x.unsqueeze(0).repeat(n, 1, 1, 1)


def test_augment_rotation_moves_a_known_pixel_where_it_should():
    """A turn by a about the centre: the output pixel at (u, v) from the centre reads the
    input at R(a) (u, v); the drawn angles stay within +-rotation; the corners turned out of
    the window are black, the centre never."""
    side, n = 33, 256
    generator = torch.Generator().manual_seed(5)
    theta = batches.augment_thetas(n, generator, aug(hflip=0, crop_scale=1.0, rotation=30))
    angles = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 1, 1]))
    assert angles.abs().max() <= 30 and angles.abs().max() > 25 and angles.min() < -25
    out = batches.augment(ramp_images(n, side), theta, black_corners=True)
    c = side // 2  # the centre pixel: a turn leaves it in place
    assert torch.allclose(out[:, 0, c, c], torch.full((n,), float(c)), atol=1e-4)
    u, v = 6, 0  # 6 px right of the centre
    a = torch.deg2rad(angles)
    x = c + torch.cos(a) * u - torch.sin(a) * v  # the input point it reads (pixel units)
    y = c + torch.sin(a) * u + torch.cos(a) * v
    assert torch.allclose(out[:, 0, c + v, c + u], x, atol=1e-3)
    assert torch.allclose(out[:, 1, c + v, c + u], y, atol=1e-3)
    turned = angles.abs() > 10  # a corner of the window leaves it: black there
    assert torch.all(out[turned][:, :, 0, 0] == 0)
    assert torch.all(out[~turned.logical_or(angles.abs() > 0.5)][:, :, c, c] != 0)


def test_augment_flip_rate_is_the_flip_probability():
    n = 20000
    theta = batches.augment_thetas(n, torch.Generator().manual_seed(0), aug(hflip=0.3))
    rate = (theta[:, 0, 0] < 0).double().mean().item()
    assert abs(rate - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5  # within 4 standard errors
    never = batches.augment_thetas(100, torch.Generator().manual_seed(0), aug(hflip=0.0))
    assert torch.all(never[:, 0, 0] > 0)


def test_augment_pad_crop_is_the_templates_resize_256_crop_224_with_4px_padding():
    """Fixed side 224/256 and a window that may reach 4/256 of the side past each edge:
    on a ramp, each output step is 0.875 input pixels and the window's first pixel starts
    between -4 and +36 pixels of a 256 image (scaled to the image's side); beyond the edge
    the image is reflected, so the ramp folds back instead of going flat or black."""
    side, n = 256, 64
    a = aug(hflip=0, crop="pad", crop_scale=224 / 256, crop_pad=4 / 256)
    theta = batches.augment_thetas(n, torch.Generator().manual_seed(2), a)
    assert torch.allclose(theta[:, 0, 0], torch.full((n,), 0.875))
    reach = 1 - 0.875 + 2 * 4 / 256  # the window centre's reach, in [-1, 1] units: 20/128
    many = batches.augment_thetas(4096, torch.Generator().manual_seed(3), a)
    assert many[:, :, 2].abs().max() <= reach + 1e-6
    assert many[:, :, 2].abs().max() > 0.99 * reach
    out = batches.augment(ramp_images(n, side), theta, batches.padding_mode(a))
    row = out[:, 0, side // 2]  # x ramp along one row
    inner = row[:, 64:192].diff(dim=1)
    assert torch.allclose(inner, torch.full_like(inner, 0.875), atol=1e-3)
    start = (theta[:, 0, 2] + 1 - 0.875) * side / 2  # the window's left edge, in pixels
    assert start.min() >= -4 - 1e-3 and start.max() <= 36 + 1e-3
    left = start < -2  # windows that start 2-4 px past the left edge: the ramp folds back
    assert left.any() and torch.all(row[left, 0] > row[left, 2] + 0.5)
    assert batches.padding_mode(a) == "reflection" and batches.padding_mode(aug()) == "border"


def test_channel_stats_match_a_float_computation():
    images = torch.randint(0, 256, (10, 3, 5, 5), dtype=torch.uint8)
    mean, std = preprocess.channel_stats(images, chunk=3)
    x = images.double() / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist())
    assert std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist())


@pytest.mark.parametrize(("n", "batch_size", "expected"), [(32, 16, 2), (33, 16, 2), (34, 16, 3)])
def test_a_single_image_batch_is_dropped(n, batch_size, expected):
    augment = aug()
    plan = batches.epoch_plan(n, batch_size, torch.Generator().manual_seed(0), augment, CPU)
    assert len(plan) == expected == batches.steps_per_epoch(n, batch_size)
    assert min(len(b.index) for b in plan) > 1
    assert all(b.theta.shape == (len(b.index), 2, 3) for b in plan)


def test_an_epoch_plan_is_drawn_once_from_the_cpu_generator():
    """Permutation first, then every image's augmentation: the same stream on every device."""
    augment = aug()
    plan = batches.epoch_plan(10, 4, torch.Generator().manual_seed(3), augment, CPU)
    generator = torch.Generator().manual_seed(3)
    order = torch.randperm(10, generator=generator)
    theta = batches.augment_thetas(10, generator, augment)
    assert torch.equal(torch.cat([b.index for b in plan]), order)
    assert torch.equal(torch.cat([b.theta for b in plan]), theta)


def test_train_epoch_weights_loss_and_accuracy_by_images_not_batches():
    """10 images in batches of 4, 4, 2: the epoch's loss and accuracy are per-image means.

    A net without BatchNorm and a zero lr keep every image's loss independent of its batch, so
    the expected numbers are one forward pass over all images.
    """
    torch.manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    train = Split(images, labels, [str(i) for i in range(10)], ["a", "b", "c"])
    normalize = preprocess.Normalize([0.5] * 3, [0.25] * 3, torch.device("cpu"))
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3), nn.LogSoftmax(dim=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    tp = tiny_params(
        **{"train.batch_size": 4, "train.augment.hflip": 0.0, "train.augment.crop_scale": 1.0}
    ).train
    progress = RunProgress("t", 3, "cpu")
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ctx = loop.StepContext(model, normalize, optimizer, scheduler, scaler, tp.grad_clip, None)
    loss, acc, _ = loop.train_epoch(ctx, train, tp, torch.Generator().manual_seed(0), progress)
    progress.close()

    with torch.no_grad():
        log_probs = model(normalize(preprocess.to_unit(images)))
    assert loss == pytest.approx(F.nll_loss(log_probs, labels).item(), rel=1e-6)
    assert acc == pytest.approx((log_probs.argmax(1) == labels).double().mean().item())


def test_predict_scores_in_eval_mode():
    """BatchNorm must use its running statistics: predicting a batch equals predicting each
    image alone in eval mode, whatever mode the net was in, and the statistics stay put."""
    torch.manual_seed(0)
    model = build_model("cnn", width_mult=0.25)
    with torch.no_grad():  # running stats unlike any batch's, so train mode would differ
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    normalize = preprocess.Normalize([0.5] * 3, [0.25] * 3, torch.device("cpu"))

    batched = loop.predict(model, images, normalize, batch_size=6)
    model.eval()
    with torch.no_grad():
        alone = torch.cat(
            [model(normalize(preprocess.to_unit(images[i : i + 1]))) for i in range(6)]
        )
    assert torch.allclose(batched, alone, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", ["cnn", "dsc", "deformable"])
def test_one_epoch_per_net_at_32px_under_cpu_bf16_autocast(arch):
    """Every net trains and scores under CPU autocast (the DeformConv positions stay float32)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(24) % 7
    split = Split(images, labels, [str(i) for i in range(24)], [f"b{i}" for i in range(7)])
    normalize = preprocess.Normalize([0.5] * 3, [0.25] * 3, CPU)
    torch.manual_seed(0)
    model = devices.prepare_model(build_model(arch, width_mult=0.25), CPU)
    history = loop.train_model(
        model, split, split, normalize, Schedule("s", [1], [0.01]), tiny_params().train, 0.1,
        seed=0, dtype=torch.bfloat16,
    )  # fmt: skip
    assert len(history) == 1
    assert torch.isfinite(torch.tensor([history[0].train_loss, history[0].val_loss])).all()
    log_probs = loop.predict(model, images, normalize, 8, torch.bfloat16)
    assert log_probs.dtype == torch.float32 and log_probs.shape == (24, 7)


def test_auto_precision_is_float32_without_native_bf16(monkeypatch):
    monkeypatch.setattr(devices, "native_cpu_bf16", lambda: False)
    assert devices.resolve_amp("auto", CPU, "cnn") == "off"
    monkeypatch.setattr(devices, "native_cpu_bf16", lambda: True)
    assert devices.resolve_amp("auto", CPU, "cnn") == devices.CPU_AUTO_AMP["cnn"]
    assert devices.resolve_amp("off", CPU, "cnn") == "off"


def test_keep_freed_memory_takes_on_glibc():
    """On Linux (glibc) both mallopt settings are accepted; elsewhere it says it did nothing."""
    import platform

    from dogbreeds.training.devices import keep_freed_memory

    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is on_glibc


def test_batch_mean_accuracy_weighs_a_short_last_batch_as_a_full_one():
    """131 val images at batch 32 (the paper's split): 4 full batches and one of 3, so each of
    the last 3 images weighs 32/3 times as much as one in a full batch."""
    hits = torch.zeros(131, dtype=torch.bool)
    hits[128:] = True  # only the short batch is right
    assert loop.batch_mean_accuracy(hits, 32) == pytest.approx(1 / 5)
    assert (hits.double().mean().item()) == pytest.approx(3 / 131)
    full = torch.rand(128) < 0.6  # whole batches only: the two estimators agree
    assert loop.batch_mean_accuracy(full, 32) == pytest.approx(full.double().mean().item())
    # The paper's grid: 1,185 training images at batch 16 give 74 full batches and one of 1,
    # so every per-batch mean is a multiple of 1/(75*16) = 1/1200.
    some = torch.rand(1185, generator=torch.Generator().manual_seed(0)) < 0.7
    value = loop.batch_mean_accuracy(some, 16) * 1200
    assert value == pytest.approx(round(value), abs=1e-9)
    with pytest.raises(ValueError):
        loop.batch_mean_accuracy(torch.zeros(0, dtype=torch.bool), 16)


@pytest.mark.parametrize("arch", ["cnn", "dsc", "deformable"])
def test_the_weights_layout_sets_the_nets_and_the_inputs_layout_does_not_matter(arch):
    """prepare_model's layout is the net's: a channels_last net gives the same outputs and
    gradients bit for bit from a contiguous input as from a channels_last one (so `inputs`
    converts nothing), and a contiguous net agrees with it to float rounding."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    results = {}
    for layout, x_layout in [("channels_last", torch.channels_last),
                             ("channels_last", torch.contiguous_format),
                             ("contiguous", torch.contiguous_format)]:  # fmt: skip
        torch.manual_seed(1)
        model = devices.prepare_model(build_model(arch, width_mult=0.25), CPU, layout)
        out = model(x.contiguous(memory_format=x_layout))
        out.sum().backward()
        assert out.is_contiguous() and model.features[0].weight.is_contiguous(
            memory_format=devices.MEMORY_FORMATS[layout]
        )
        results[layout, x_layout] = [out.detach()] + [p.grad for p in model.parameters()]
    cl_in, plain_in = (results["channels_last", f] for f in (torch.channels_last,
                                                              torch.contiguous_format))  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(cl_in, plain_in, strict=True))
    for a, b in zip(cl_in, results["contiguous", torch.contiguous_format], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
