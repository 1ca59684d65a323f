"""params.yaml is read once, typed, and every bad value is named by its key."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from datagen import set_keys

from dogbreeds.params import ParamsError, load_params, parse_params, read_yaml

ROOT = Path(__file__).resolve().parents[1]
TREE = read_yaml(ROOT / "params.yaml")


def with_value(key: str, value):
    return set_keys(copy.deepcopy(TREE), {key: value})


def test_the_repository_params_are_the_papers_study():
    params = load_params(ROOT / "params.yaml")
    assert params.data.sources == ["stanford", "dbi"]
    assert params.model.width_mult == 1.0 and params.model.resolution == 224
    assert params.train.archs == ["cnn", "dsc", "deformable"]
    assert {n: s.epochs for n, s in params.train.schedules.items()} == {
        "s20_14_6": [20, 14, 6],
        "s50_7_3": [50, 7, 3],
        "s50_14_6": [50, 14, 6],
    }
    for schedule in params.train.schedules.values():
        assert schedule.max_lr == [0.01, 0.001, 0.0001]
    assert params.train.batch_size == 32
    assert params.train.weight_decay == 1e-4 and params.train.grad_clip == 0.1
    assert params.report.bootstrap_resamples == 10_000
    assert params.report.seed == 22 and params.report.power == 0.8


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "train.archs",
            ["cnn", "resnet"],
            "'train.archs' has 'resnet'; valid: cnn, dsc, deformable",
        ),
        ("train.archs", [], "'train.archs' must be a non-empty list"),
        ("train.seeds", [], "'train.seeds' must be a non-empty list of integers"),
        ("train.seeds", [0, -1], "'train.seeds' must hold integers >= 0, got -1"),
        ("train.seeds", [1, 1], "'train.seeds' lists a seed twice: [1, 1]"),
        ("robustness.kinds", ["blur"], "'robustness.kinds' has 'blur'; valid: affine,"),
        ("robustness.strengths", [0, -0.5], "'robustness.strengths' must hold numbers >= 0"),
        ("data.sources", ["imagenet"], "'data.sources' has 'imagenet'"),
        ("split.val", 1.5, "'split.val' must be <= 1"),
        ("split.test", 0, "'split.test' must be > 0"),
        ("split.val", 0.8, "'split.val' + 'split.test' must be < 1"),
        ("model.width_mult", -0.5, "'model.width_mult' must be > 0"),
        ("model.resolution", "big", "'model.resolution' must be a number"),
        ("train.schedules", {}, "'train.schedules' must map at least one schedule"),
        (
            "train.schedules.s50_7_3.epochs",
            [],
            "'train.schedules.s50_7_3.epochs' must be a non-empty",
        ),
        (
            "train.schedules.s50_7_3.max_lr",
            [0.01],
            "'train.schedules.s50_7_3.max_lr' must list one",
        ),
        ("train.schedules.s50_7_3.epochs", [5, 0, 1], "must hold integers >= 1"),
        ("train.device", "tpu", "'train.device' is 'tpu'; valid: auto, cpu, cuda"),
        ("model.deformable.backend", "x", "'model.deformable.backend' is 'x'"),
        ("train.augment.hflip", "false", "'train.augment.hflip' must be a number"),
        ("train.augment.hflip", 1.5, "'train.augment.hflip' must be <= 1"),
        ("train.augment.crop", "random", "'train.augment.crop' is 'random'; valid: zoom, pad"),
        ("train.augment.crop_pad", -0.1, "'train.augment.crop_pad' must be >= 0"),
        ("train.augment.rotation", 200, "'train.augment.rotation' must be <= 180"),
        ("train.eval_batch_size", 0, "'train.eval_batch_size' must be >= 1"),
        ("train.normalize", "no", "'train.normalize' must be true or false"),
        ("data.stanford.sha256", "abc", "'data.stanford.sha256' must be 64 hex digits"),
        ("train.batch_size", 0, "'train.batch_size' must be >= 1"),
        ("train.one_cycle.pct_start", 1.0, "'train.one_cycle.pct_start' must be < 1, got 1.0"),
        ("train.one_cycle.pct_start", 0, "'train.one_cycle.pct_start' must be > 0, got 0"),
        ("data.synthetic.seed", -1, "'data.synthetic.seed' must be >= 0, got -1"),
        ("split.seed", -1, "'split.seed' must be >= 0, got -1"),
        ("split.seed", 2**32, "'split.seed' must be <= 4294967295, got 4294967296"),
        ("deform.seed", -3, "'deform.seed' must be >= 0, got -3"),
        ("train.seeds", [2**40], "'train.seeds' must hold integers <= 4294967295"),
        ("split.val", float("nan"), "'split.val' must be a finite number, got nan"),
        ("train.grad_clip", float("inf"), "'train.grad_clip' must be a finite number, got inf"),
        ("train.schedules.s50_7_3.max_lr", [0.01, float("nan"), 0.1], "must hold numbers > 0"),
        (
            "deform.affine.scale",
            [1.15, 0.85],
            "'deform.affine.scale' must be [low, high] with 0 < low <= high, got [1.15, 0.85]",
        ),
        ("deform.affine.scale", [0, 1], "with 0 < low <= high, got [0, 1]"),
        ("deform.affine.scale", 1.0, "'deform.affine.scale' must be a list [low, high], got 1.0"),
        ("deform.affine.degrees", -1, "'deform.affine.degrees' must be >= 0, got -1"),
        ("deform.affine.shear", 90, "'deform.affine.shear' must be < 90.0, got 90"),
        ("deform.affine.sheer", 5, "unknown key 'deform.affine.sheer'; did you mean 'deform.af"),
        ("deform.perspective.distortion", 1.5, "'deform.perspective.distortion' must be <= 1"),
        ("deform.elastic.sigma", 0, "'deform.elastic.sigma' must be > 0, got 0"),
        ("deform.elastic.sigma", -2.0, "'deform.elastic.sigma' must be > 0, got -2.0"),
        (
            "deform.elastic.sigma",
            60,
            "'deform.elastic.sigma' 60 is too wide for 'model.resolution' 224: its blur pads 240"
            " px past the edge of a 224 px image; use a sigma below 55.875",
        ),
        (
            "deform.affine.scale",
            [0.3, 1.15],
            "'deform.affine.scale' starts at 0.3, which the largest 'robustness.strengths' 2 "
            "takes to -0.4; a scale must stay above 0 (low > 0.5, or a smaller strength)",
        ),
        ("deform.affine.shear", 50, "'deform.affine.shear' 50 times the largest 'robustness."),
        (
            "data.dbi.folders.golden_retriever",
            "labrador",
            "'data.dbi.folders' maps two breeds to the folder 'labrador' (golden_retriever, "
            "labrador_retriever); each breed needs a folder of its own",
        ),
        ("data.dbi.folders.pug", "a/pug", "'data.dbi.folders.pug' must be a folder name"),
        ("merge.min_side", 0, "'merge.min_side' must be >= 1, got 0"),
        ("merge.max_aspect", 0.5, "'merge.max_aspect' must be >= 1, got 0.5"),
        ("split.min_per_breed", 0, "'split.min_per_breed' must be >= 1, got 0"),
        ("data.extract.max_member_mib", 0, "'data.extract.max_member_mib' must be > 0, got 0"),
        ("data.extract.max_total_mib", -1, "'data.extract.max_total_mib' must be > 0"),
        ("data.extract.max_ratio", 0.5, "'data.extract.max_ratio' must be >= 1, got 0.5"),
        ("report.bootstrap_resamples", 50, "'report.bootstrap_resamples' must be >= 200"),
        ("report.bootstrap_resamples", 2000.5, "'report.bootstrap_resamples' must be an integer"),
        ("report.seed", -1, "'report.seed' must be >= 0"),
        ("report.power", 1.0, "'report.power' must be < 1"),
        ("report.power", 0, "'report.power' must be > 0"),
    ],
)
def test_invalid_values_name_their_key(key, value, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        parse_params(with_value(key, value))


def test_batch_of_one_at_a_one_pixel_last_feature_map_is_refused():
    """BatchNorm cannot train on one value per channel; 17 px keeps a 2x2 last map."""
    tree = set_keys(copy.deepcopy(TREE), {"train.batch_size": 1, "model.resolution": 16})
    with pytest.raises(ParamsError) as error:
        parse_params(tree)
    assert str(error.value) == (
        "params: 'train.batch_size' 1 at 'model.resolution' 16 gives BatchNorm one value per "
        "channel (the last feature map is 1x1); use a batch of 2 or more, or a resolution of 17 "
        "or more"
    )
    for fix in ({"train.batch_size": 2}, {"model.resolution": 17}):
        parse_params(set_keys(copy.deepcopy(tree), fix))


def test_a_warm_up_of_exactly_one_step_is_refused():
    """OneCycleLR divides by zero when pct_start x total steps is exactly 1 (0.1 x 10 x 1)."""
    tree = set_keys(copy.deepcopy(TREE), {"train.one_cycle.pct_start": 0.1})
    tree["train"]["schedules"]["s20_14_6"]["epochs"] = [10, 14, 6]
    with pytest.raises(ParamsError) as error:
        parse_params(tree)
    assert str(error.value) == (
        "params: 'train.one_cycle.pct_start' 0.1 makes a warm-up of exactly one step for a stage "
        "of 10 epoch(s) of 'train.schedules.s20_14_6.epochs' at 1 step(s) per epoch, where "
        "OneCycleLR divides by zero; nudge it (e.g. 0.101)"
    )


def test_a_synthetic_size_below_the_minimum_side_is_refused():
    tree = set_keys(copy.deepcopy(TREE), {"data.sources": ["synthetic"], "data.synthetic.size": 16})
    with pytest.raises(ParamsError, match=r"'data.synthetic.size' 16 is below 'merge.min_side' 32"):
        parse_params(tree)


def test_missing_key_is_named():
    tree = copy.deepcopy(TREE)
    del tree["train"]["grad_clip"]
    with pytest.raises(ParamsError, match="missing key 'train.grad_clip'"):
        parse_params(tree)


def test_report_keys_are_checked_like_every_other():
    tree = copy.deepcopy(TREE)
    tree["report"]["resamples"] = tree["report"].pop("bootstrap_resamples")
    with pytest.raises(ParamsError, match="unknown key 'report.resamples'; did you mean"):
        parse_params(tree)
    del tree["report"]
    with pytest.raises(ParamsError, match="missing key 'report.bootstrap_resamples'"):
        parse_params(tree)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ParamsError, match="bad.yaml: not valid YAML"):
        load_params(bad)


def test_exponent_floats_written_by_dvc_exp_are_numbers(tmp_path):
    """`dvc exp run -S 'x=[..., 0.00005]'` writes 5e-05, which YAML 1.1 readers take as a string."""
    text = (ROOT / "params.yaml").read_text().replace("weight_decay: 0.0001", "weight_decay: 1e-4")
    text = text.replace("- 0.0001", "- 5e-05")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    params = load_params(path)
    assert params.train.weight_decay == 1e-4
    assert params.train.schedules["s20_14_6"].max_lr == [0.01, 0.001, 5e-05]


def test_deform_keys_are_the_deform_stages():
    from dogbreeds.data.deformations import DEFORM_KEYS as STAGE_KEYS
    from dogbreeds.params import DEFORM_KEYS

    assert {kind: set(keys) for kind, keys in DEFORM_KEYS.items()} == STAGE_KEYS


def test_deform_backend_choices_are_deformconvs_backends():
    from dogbreeds.ops.deform_conv import BACKENDS
    from dogbreeds.params import DEFORM_BACKENDS

    assert DEFORM_BACKENDS == BACKENDS
