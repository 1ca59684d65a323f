"""Params drawn near and across every bound: refused in one line naming the key, or usable.

The issue this answers (32): values that passed `parse_params` and then crashed a stage with a
traceback (a reversed scale range inside a pool worker, a batch of one before BatchNorm, a
warm-up of one step in OneCycleLR). Hypothesis draws a few keys at a time from values at,
just inside and just outside each bound (and junk: NaN, infinities, strings, None, booleans),
on a tiny study's params. Each draw must either be refused with a `ParamsError` of one line
that quotes one of the drawn keys, or pass and then build what the stages build from it, on
a tiny input: the deformations (the study's, and each robustness kind at the largest
strength) applied to an image, every net's training forward at `train.batch_size` (two at
most: BatchNorm fails at one), every stage's optimiser and one-cycle schedule stepped to the
end at 1-4 steps per epoch, the augmentation maps of an epoch, a synthetic image, the split's
random state and the extraction budget. No training.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import set_keys
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sklearn.utils import check_random_state

from dogbreeds.data.deformations import build_deformation, deform_image
from dogbreeds.data.robustness import scaled
from dogbreeds.data.sources import Budget
from dogbreeds.data.synthetic import synthetic_image
from dogbreeds.nets.models import build_model
from dogbreeds.params import MAX_SEED, DeformParams, Params, ParamsError, parse_params, read_yaml
from dogbreeds.training.batches import augment_thetas, epoch_plan
from dogbreeds.training.optim import make_optimizer, one_cycle

ROOT = Path(__file__).resolve().parents[1]
DRAWS = 500

# A study small enough to build 500 times: 32 px, a quarter of the channels, short stages.
BASE = set_keys(
    read_yaml(ROOT / "params.yaml"),
    {
        "data.sources": ["synthetic"],
        "data.synthetic.size": 32,
        "model.resolution": 32,
        "model.width_mult": 0.25,
        "train.batch_size": 4,
        "train.device": "cpu",
        "train.archs": ["cnn", "dsc", "deformable"],
        "train.schedules": {"tiny": {"epochs": [1, 2, 3], "max_lr": [0.01, 0.001, 0.0001]}},
    },
)

# key: (low, high, integer?, low open?, high open?); None for a side without a bound.
BOUNDS = {
    "data.synthetic.per_class": (1, None, True, False, False),
    "data.synthetic.size": (8, 1024, True, False, False),
    "data.synthetic.seed": (0, MAX_SEED, True, False, False),
    "data.extract.max_member_mib": (0, None, False, True, False),
    "data.extract.max_total_mib": (0, None, False, True, False),
    "data.extract.max_ratio": (1, None, False, False, False),
    "merge.near_dup_max_bits": (0, 64, True, False, False),
    "merge.min_side": (1, None, True, False, False),
    "merge.max_aspect": (1, None, False, False, False),
    "split.val": (0, 1, False, True, False),
    "split.test": (0, 1, False, True, False),
    "split.seed": (0, MAX_SEED, True, False, False),
    "split.min_per_breed": (1, None, True, False, False),
    "deform.seed": (0, MAX_SEED, True, False, False),
    "deform.affine.degrees": (0, 180, False, False, False),
    "deform.affine.translate": (0, 1, False, False, False),
    "deform.affine.shear": (0, 90, False, False, True),
    "deform.perspective.distortion": (0, 1, False, False, False),
    "deform.perspective.p": (0, 1, False, False, False),
    "deform.elastic.alpha": (0, None, False, False, False),
    "deform.elastic.sigma": (0, 56, False, True, True),
    "deform.elastic.p": (0, 1, False, False, False),
    "deform.preview_images": (1, None, True, False, False),
    "model.width_mult": (0, 2, False, True, False),
    "model.resolution": (16, 40, True, False, False),
    "model.deformable.offset_lr_mult": (0, None, False, False, False),
    "train.one_cycle.pct_start": (0, 1, False, True, True),
    "train.one_cycle.div_factor": (0, None, False, True, False),
    "train.one_cycle.final_div_factor": (0, None, False, True, False),
    "train.batch_size": (1, 8, True, False, False),
    "train.eval_batch_size": (1, None, True, False, False),
    "train.weight_decay": (0, None, False, False, False),
    "train.grad_clip": (0, None, False, True, False),
    "train.augment.hflip": (0, 1, False, False, False),
    "train.augment.crop_scale": (0, 1, False, True, False),
    "train.augment.crop_pad": (0, 0.5, False, False, False),
    "train.augment.rotation": (0, 180, False, False, False),
    "report.bootstrap_resamples": (200, None, True, False, False),
    "report.seed": (0, MAX_SEED, True, False, False),
    "report.power": (0, 1, False, True, True),
}
JUNK = [math.nan, math.inf, -math.inf, "1", None, True, [1]]
# Lists drawn whole: each element near its bound, or a list of the wrong shape.
LISTS = {
    "deform.affine.scale": st.one_of(
        st.lists(
            st.sampled_from([-0.1, 0.0, 1e-9, 0.3, 0.5, 0.51, 0.85, 1.0, 1.15, 3.0]),
            min_size=2,
            max_size=2,
        ),  # fmt: skip
        st.sampled_from([[], [1.0], [0.9, 1.1, 1.2], 1.0, [math.nan, 1.0], ["a", "b"]]),
    ),
    "robustness.strengths": st.lists(
        st.sampled_from([-1e-9, 0, 0.25, 1, 1.99, 2, 2.01, 4, math.inf]), min_size=0, max_size=4
    ),
    "train.seeds": st.lists(st.sampled_from([-1, 0, 1, MAX_SEED, MAX_SEED + 1]), max_size=3),
    "train.schedules.tiny.epochs": st.lists(
        st.sampled_from([0, 1, 2, 3, 10, 1.5]), min_size=3, max_size=3
    ),  # fmt: skip
    "train.schedules.tiny.max_lr": st.lists(
        st.sampled_from([-1e-3, 0, 1e-9, 0.01, math.nan]), min_size=3, max_size=3
    ),  # fmt: skip
}


def near(low: float | None, high: float | None, integer: bool) -> list:
    """Values at, just inside and just outside each bound, and a few plain ones."""
    values: list = [0, 1, 2, -1]
    for bound in (low, high):
        if bound is None:
            continue
        if integer:
            values += [bound - 1, bound, bound + 1]
        else:
            step = max(abs(bound), 1) * 1e-9
            values += [bound - step, bound, bound + step, bound - 0.5, bound + 0.5]
    if high is None:
        values.append(10**6 if integer else 1e6)
    return values


def value_for(key: str) -> st.SearchStrategy:
    if key in LISTS:
        return LISTS[key]
    low, high, integer, _, _ = BOUNDS[key]
    return st.sampled_from(near(low, high, integer) + JUNK + ([2.5] if integer else []))


# Every bound's values drawn alone as well (random draws favour some values over others), and
# the combinations that once crashed a stage.
EXAMPLES = [
    {key: value}
    for key, (low, high, integer, _, _) in BOUNDS.items()
    for value in near(low, high, integer) + JUNK
] + [
    {"deform.affine.scale": [1.15, 0.85]},
    {"deform.affine.scale": [0.3, 1.15]},
    {"deform.affine.scale": [0.51, 1.15]},
    {"deform.affine.shear": 45, "robustness.strengths": [0, 2]},
    {"deform.affine.shear": 44.9, "robustness.strengths": [0, 2]},
    {"train.batch_size": 1, "model.resolution": 16},
    {"train.batch_size": 1, "model.resolution": 17},
    {"train.batch_size": 2, "model.resolution": 16},
    {"train.one_cycle.pct_start": 0.5, "train.schedules.tiny.epochs": [2, 2, 2]},
    {"train.one_cycle.pct_start": 0.25, "train.schedules.tiny.epochs": [1, 2, 3]},
    {"deform.elastic.sigma": 55.9, "model.resolution": 16},
    {"robustness.strengths": [0]},
    {"data.synthetic.size": 31},
    {"split.seed": MAX_SEED},
]


def with_examples(test):
    for case in EXAMPLES:
        test = example(case)(test)
    return test


KEYS = sorted([*BOUNDS, *LISTS])
draws = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({key: value_for(key) for key in keys})
)


@functools.cache
def train_forward(arch: str, classes: int, width_mult: float, side: int, batch: int) -> None:
    """A net's training forward (BatchNorm in train mode). Cached: most draws leave these
    values as they were, and the same values build the same net."""
    model = build_model(arch, classes, width_mult)
    model.train()
    assert torch.isfinite(model(torch.rand(batch, 3, side, side))).all()
    make_optimizer(model, 0.01, 1e-4, 0.1)


DEFORMED: set[tuple] = set()  # deformations already built and applied


def deformations(deform: DeformParams, side: int, top: float, kinds: list[str]) -> None:
    """The study's deformation and each robustness kind's at the largest strength, applied
    (once per distinct set of values, like train_forward)."""
    key = (repr(deform), side, top, tuple(kinds))
    if key in DEFORMED:
        return
    image = torch.randint(0, 256, (3, side, side), dtype=torch.uint8)
    deform_image(image, build_deformation(deform, side), 1)
    for kind in kinds:
        deform_image(image, build_deformation(scaled(deform, top, kind), side), 2)
    DEFORMED.add(key)


def build_stage_objects(params: Params) -> None:
    """What the stages make from params, on tiny inputs; any exception fails the draw."""
    side = params.model.resolution
    top = max(params.robustness.strengths)
    deformations(params.deform, side, top, params.robustness.kinds)
    generator = torch.Generator().manual_seed(params.train.seeds[0])
    augment_thetas(8, generator, params.train.augment)
    epoch_plan(9, params.train.batch_size, generator, params.train.augment, torch.device("cpu"))
    batch = min(params.train.batch_size, 2)  # BatchNorm fails at one image, not at two
    for arch in params.train.archs:
        train_forward(arch, len(params.data.breeds), params.model.width_mult, side, batch)
    weights = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]  # the two groups' shape
    for schedule in params.train.schedules.values():
        for epochs, max_lr in zip(schedule.epochs, schedule.max_lr, strict=True):
            peaks = [max_lr, max_lr * params.model.deformable.offset_lr_mult]
            for steps in (1, 2, 3, 4):  # a stage's cycle at each small number of steps per epoch
                groups = [{"params": [w], "lr": p} for w, p in zip(weights, peaks, strict=True)]
                optimizer = torch.optim.Adam(groups, weight_decay=params.train.weight_decay)
                scheduler = one_cycle(optimizer, peaks, epochs, steps, params.train.one_cycle)
                for _ in range(epochs * steps - 1):
                    optimizer.step()
                    scheduler.step()
    synthetic_image(
        0, 0, len(params.data.breeds), params.data.synthetic.size, params.data.synthetic.seed
    )
    check_random_state(params.split.seed)
    np.random.default_rng(params.report.seed)
    Budget(params.data.extract)


@settings(
    max_examples=DRAWS,
    deadline=None,
    derandomize=True,  # the same draws on every run: a failure repeats
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(draws)
@with_examples
def test_a_drawn_value_is_refused_naming_its_key_or_builds_the_stages(updates: dict) -> None:
    tree = set_keys(copy.deepcopy(BASE), updates)
    try:
        params = parse_params(tree)
    except ParamsError as exc:
        message = str(exc)
        assert "\n" not in message, message
        named = {key for key in updates if f"'{key}" in message}
        named |= {key for key in updates if key.startswith("train.schedules.") and
                  "'train.schedules.tiny" in message}  # fmt: skip
        assert named, f"{updates} refused without naming a drawn key: {message}"
        event("refused")
        return
    build_stage_objects(params)
    event("passed and built")


def test_the_base_study_passes_and_builds() -> None:
    build_stage_objects(parse_params(copy.deepcopy(BASE)))


@pytest.mark.parametrize("key", sorted(BOUNDS))
def test_every_bound_is_enforced(key: str) -> None:
    """The table above is the code's: one step outside each bound is refused, naming the key."""
    low, high, integer, low_open, high_open = BOUNDS[key]
    step = 1 if integer else 1e-6
    outside = []
    if low is not None:
        outside.append(low if low_open else low - step)
    if high is not None and key not in ("model.resolution", "model.width_mult", "train.batch_size"):
        outside.append(high if high_open else high + step)  # (those highs bound the draws only)
    for value in outside:
        with pytest.raises(ParamsError, match=f"'{key}'"):
            parse_params(set_keys(copy.deepcopy(BASE), {key: value}))
