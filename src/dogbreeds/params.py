"""Typed view of params.yaml, read once and validated before any work.

Every stage reads the whole file through `load_params`, so a bad value anywhere is reported
before the first byte of output is written, with the offending key named. A key that no
dataclass below reads (a typo such as `train.batchsize`) is refused too, with the closest
real key, rather than silently ignored while the default runs.

Longer than the package's usual 400 lines on purpose: it is the whole params contract, every
section's dataclass beside the check of its values, so one file answers "what may I set?".
"""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from dogbreeds import DogbreedsError

ARCHS = ("cnn", "dsc", "deformable")
SOURCES = ("stanford", "dbi", "synthetic")
# deformconv.BACKENDS (params imports no torch, so the names are repeated; a test compares them)
DEFORM_BACKENDS = ("auto", "reference", "gather", "fused", "triton", "torchvision")
DEVICES = ("auto", "cpu", "cuda")
AMPS = ("auto", "off", "bf16", "fp16")
ROBUSTNESS_KINDS = ("affine", "perspective", "elastic", "all")
# The nets halve the side 4 times (models.py): below 16 px the last layers see a padded pixel.
MIN_RESOLUTION = 16
# Percentile intervals read the 2.5% tails of the resamples: fewer than this leaves a handful.
MIN_RESAMPLES = 200
# Every seed ends in numpy's or scikit-learn's RandomState somewhere, which takes 32 bits.
MAX_SEED = 2**32 - 1
# The nets' stride-2 layers (models.py): each halves the side, rounding up (padding 1).
HALVINGS = 4
# deformations.DEFORM_KEYS (repeated: params imports no torch; a test compares them)
DEFORM_KEYS = {
    "affine": ("degrees", "translate", "scale", "shear"),
    "perspective": ("distortion", "p"),
    "elastic": ("alpha", "sigma", "p"),
}
# A shear of 90 degrees or more folds the image onto a line (tan is infinite there).
MAX_SHEAR = 90.0
MIB = 1 << 20
# A synthetic image is drawn whole in memory; the nets never need more than a few hundred px.
MAX_SYNTHETIC_SIDE = 1024


class ParamsError(DogbreedsError):
    """A value in params.yaml is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class SourceParams:
    url: str
    sha256: str
    folders: dict[str, str]  # canonical breed -> folder name inside the archive


@dataclass(frozen=True)
class SyntheticParams:
    per_class: int
    size: int
    seed: int


@dataclass(frozen=True)
class ExtractParams:
    """The download stage's budget: an archive may not write more than this (a zip bomb, a
    wrong URL, a disk filled by one member), checked while streaming, before bytes are written."""

    max_member_mib: float  # one file; a bigger member is skipped and listed
    max_total_mib: float  # all sources together; more stops the stage
    max_ratio: float  # uncompressed / compressed bytes, per zip member or per compressed tar

    @property
    def max_member_bytes(self) -> int:
        return int(self.max_member_mib * MIB)

    @property
    def max_total_bytes(self) -> int:
        return int(self.max_total_mib * MIB)


@dataclass(frozen=True)
class DataParams:
    breeds: list[str]
    sources: list[str]
    stanford: SourceParams
    dbi: SourceParams
    synthetic: SyntheticParams
    extract: ExtractParams


@dataclass(frozen=True)
class MergeParams:
    near_dup_max_bits: int
    min_side: int  # a photo's shorter side in pixels: below it, rejected (thumbnails, icons)
    max_aspect: float  # longer side / shorter side: beyond it, rejected (banners, strips)


@dataclass(frozen=True)
class SplitParams:
    val: float
    test: float
    seed: int
    # Images each breed must have in each of train, val and test: a breed short of it stops
    # merge and split (otherwise a net is trained on fewer classes than it is scored on).
    min_per_breed: int


@dataclass(frozen=True)
class DeformParams:
    seed: int
    affine: dict[str, Any]
    perspective: dict[str, Any]
    elastic: dict[str, Any]
    preview_images: int


@dataclass(frozen=True)
class DeformableParams:
    """Knobs of the deformable net only (params model.deformable): only its train stages
    depend on them, so changing one never retrains the cnn or dsc nets."""

    backend: str  # DeformConv implementation; all give the same numbers to float tolerance
    offset_lr_mult: float  # offset convs train at this fraction of the lr


@dataclass(frozen=True)
class ModelParams:
    width_mult: float
    resolution: int
    deformable: DeformableParams


@dataclass(frozen=True)
class Schedule:
    """A 3-stage schedule: stage i is one one-cycle run of epochs[i] epochs peaking at max_lr[i]."""

    name: str
    epochs: list[int]
    max_lr: list[float]


@dataclass(frozen=True)
class OneCycleParams:
    """The shape shared by every one-cycle stage (OneCycleLR's own parameter names)."""

    pct_start: float
    div_factor: float
    final_div_factor: float


CROPS = ("zoom", "pad")


@dataclass(frozen=True)
class AugmentParams:
    """The training images' random maps (training.batches.augment_thetas), one per image."""

    hflip: float  # probability of a horizontal flip
    crop: str  # zoom: side ~ U[crop_scale, 1]; pad: side crop_scale, reaching crop_pad beyond
    crop_scale: float
    crop_pad: float  # pad crop: how far (a fraction of the side) the window may pass an edge
    rotation: float  # degrees: turned by U[-rotation, rotation], corners black


@dataclass(frozen=True)
class TrainParams:
    archs: list[str]
    schedules: dict[str, Schedule]
    one_cycle: OneCycleParams
    batch_size: int
    eval_batch_size: int  # val and test batches (eval mode: results differ by rounding only)
    normalize: bool  # inputs standardised by the training split's channel mean and std
    weight_decay: float
    grad_clip: float
    seeds: list[int]  # the study's seeds: one trained net per (arch, schedule, seed)
    device: str
    amp: str  # auto | off | bf16 | fp16 (see training.devices.resolve_amp)
    augment: AugmentParams


@dataclass(frozen=True)
class RobustnessParams:
    """Robustness curves: the test set deformed by each kind at each strength (x deform)."""

    kinds: list[str]
    strengths: list[float]


@dataclass(frozen=True)
class ReportParams:
    """The report's statistics (docs/statistics.md); only the report stage reads them."""

    bootstrap_resamples: int  # joint resamples of seeds and test images
    seed: int  # seeds the resampling, so the report repeats bit for bit
    power: float  # "how many seeds would decide": the power the paired t test should reach
    # the smallest true difference in accuracy worth finding: seeds needed are counted for it
    min_difference: float


@dataclass(frozen=True)
class Params:
    data: DataParams
    merge: MergeParams
    split: SplitParams
    deform: DeformParams
    model: ModelParams
    train: TrainParams
    robustness: RobustnessParams
    report: ReportParams


def _get(tree: dict, key: str) -> Any:
    """Look up a dotted key, failing with the key's name when it is absent."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"params: missing key '{key}'")
        node = node[part]
    return node


def _number(value: Any, key: str, kind: type = float) -> Any:
    """`value` as a finite number of `kind`; YAML's .nan and .inf pass every `<` test, so
    they are refused here rather than met later inside a worker."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamsError(f"params: '{key}' must be a number, got {value!r}")
    if kind is int and (not isinstance(value, int)):
        raise ParamsError(f"params: '{key}' must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ParamsError(f"params: '{key}' must be a finite number, got {value!r}")
    return value


def _num(
    tree: dict,
    key: str,
    kind: type,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Any:
    value = _number(_get(tree, key), key, kind)
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ParamsError(f"params: '{key}' must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ParamsError(f"params: '{key}' must be {'<' if hi_open else '<='} {hi}, got {value!r}")
    return kind(value)


def _seed(tree: dict, key: str) -> int:
    """A seed: an integer in [0, 2**32 - 1], what numpy's and scikit-learn's RandomState take."""
    return _num(tree, key, int, 0, MAX_SEED)


def _bool(tree: dict, key: str) -> bool:
    """A YAML boolean; the string "false" is refused rather than read as true."""
    value = _get(tree, key)
    if not isinstance(value, bool):
        raise ParamsError(f"params: '{key}' must be true or false, got {value!r}")
    return value


def _choice(tree: dict, key: str, valid: tuple[str, ...]) -> str:
    value = _get(tree, key)
    if value not in valid:
        raise ParamsError(f"params: '{key}' is {value!r}; valid: {', '.join(valid)}")
    return value


def _choices(tree: dict, key: str, valid: tuple[str, ...]) -> list[str]:
    values = _get(tree, key)
    if not isinstance(values, list) or not values:
        raise ParamsError(f"params: '{key}' must be a non-empty list")
    for value in values:
        if value not in valid:
            raise ParamsError(f"params: '{key}' has {value!r}; valid: {', '.join(valid)}")
    if len(set(values)) != len(values):
        raise ParamsError(f"params: '{key}' lists a value twice: {values}")
    return list(values)


def _sha256(tree: dict, key: str) -> str:
    """A sha256 pin: 64 hex digits, or '' (or null) for none.

    Anything else is refused, never read as "unset": YAML turns an unquoted all-digit value
    into a number (`sha256: 0`), and an unverified archive must be a deliberate choice.
    """
    sha = _get(tree, key)
    if sha is None:
        return ""
    if not isinstance(sha, str):
        raise ParamsError(
            f"params: '{key}' must be a quoted string of 64 hex digits or '', got the "
            f"{type(sha).__name__} {sha!r} (YAML reads unquoted digits as a number)"
        )
    if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
        raise ParamsError(f"params: '{key}' must be 64 hex digits or empty, got {sha!r}")
    return sha.lower()


def _folders(tree: dict, name: str, breeds: list[str]) -> dict[str, str]:
    """canonical breed -> a folder name of its own (two breeds in one folder would file every
    photo under both labels, and merge would then drop them all as label conflicts)."""
    key = f"data.{name}.folders"
    folders = _get(tree, key)
    if not isinstance(folders, dict) or set(folders) != set(breeds):
        raise ParamsError(f"params: '{key}' must map exactly the breeds {breeds}")
    owner: dict[str, str] = {}
    for breed in breeds:
        folder = folders[breed]
        if isinstance(folder, int) and not isinstance(folder, bool):
            folder = str(folder)  # YAML reads an all-digit folder name as a number
        if not isinstance(folder, str) or not folder or "/" in folder or "\\" in folder:
            raise ParamsError(
                f"params: '{key}.{breed}' must be a folder name (no slashes), got {folder!r}"
            )
        if folder in owner:
            raise ParamsError(
                f"params: '{key}' maps two breeds to the folder {folder!r} ({owner[folder]}, "
                f"{breed}); each breed needs a folder of its own"
            )
        owner[folder] = breed
    return {breed: folder for folder, breed in owner.items()}


def _source(tree: dict, name: str, breeds: list[str]) -> SourceParams:
    url = _get(tree, f"data.{name}.url")
    if not isinstance(url, str) or not url:
        raise ParamsError(f"params: 'data.{name}.url' must be a non-empty string")
    sha = _sha256(tree, f"data.{name}.sha256")
    return SourceParams(url=url, sha256=sha, folders=_folders(tree, name, breeds))


def _resolution(tree: dict, key: str) -> int:
    """The input side: an integer the nets can take down through their 4 stride-2 layers."""
    value = _num(tree, key, int)
    if value < MIN_RESOLUTION:
        raise ParamsError(
            f"params: '{key}' is {value}: too small for the nets, which halve the side 4 times; "
            f"use >= {MIN_RESOLUTION}"
        )
    return value


def _seeds(tree: dict, key: str) -> list[int]:
    """A non-empty list of distinct integers >= 0 (each one names a trained net)."""
    values = _get(tree, key)
    if not isinstance(values, list) or not values:
        raise ParamsError(f"params: '{key}' must be a non-empty list of integers")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ParamsError(f"params: '{key}' must hold integers >= 0, got {value!r}")
        if value > MAX_SEED:
            raise ParamsError(f"params: '{key}' must hold integers <= {MAX_SEED}, got {value!r}")
    if len(set(values)) != len(values):
        raise ParamsError(f"params: '{key}' lists a seed twice: {values}")
    return [int(v) for v in values]


def _schedule(tree: dict, name: str) -> Schedule:
    key = f"train.schedules.{name}"
    epochs, max_lr = _get(tree, f"{key}.epochs"), _get(tree, f"{key}.max_lr")
    if not isinstance(epochs, list) or not epochs:
        raise ParamsError(f"params: '{key}.epochs' must be a non-empty list")
    if not isinstance(max_lr, list) or len(max_lr) != len(epochs):
        raise ParamsError(
            f"params: '{key}.max_lr' must list one lr per stage of '{key}.epochs' ({len(epochs)})"
        )
    for i in range(len(epochs)):
        e, lr = epochs[i], max_lr[i]
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            raise ParamsError(f"params: '{key}.epochs' must hold integers >= 1, got {e!r}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ParamsError(f"params: '{key}.max_lr' must hold numbers > 0, got {lr!r}")
        if not math.isfinite(lr):
            raise ParamsError(f"params: '{key}.max_lr' must hold finite numbers, got {lr!r}")
    return Schedule(name=name, epochs=[int(e) for e in epochs], max_lr=[float(x) for x in max_lr])


# ---------------------------------------------------------------------------------------------
# What a value means: ranges, orders and the keys that constrain each other
# ---------------------------------------------------------------------------------------------


def _scale_range(tree: dict, key: str) -> list[float]:
    """[low, high] with 0 < low <= high: RandomAffine draws U(low, high) only when an image is
    deformed (inside a pool worker), so a reversed range would fail there, far from its key."""
    value = _get(tree, key)
    if not isinstance(value, list) or len(value) != 2:
        raise ParamsError(f"params: '{key}' must be a list [low, high], got {value!r}")
    low, high = (_number(v, key) for v in value)
    if not 0 < low <= high:
        raise ParamsError(
            f"params: '{key}' must be [low, high] with 0 < low <= high, got {value!r}"
        )
    return [float(low), float(high)]


def _deform_mapping(tree: dict, kind: str) -> None:
    """deform.<kind> holds exactly its keys (deformations.DEFORM_KEYS)."""
    key, expected = f"deform.{kind}", DEFORM_KEYS[kind]
    node = _get(tree, key)
    if not isinstance(node, dict):
        raise ParamsError(f"params: '{key}' must be a mapping")
    for name in node:
        if name not in expected:
            close = difflib.get_close_matches(str(name), expected, n=1, cutoff=0.6)
            hint = f"did you mean '{key}.{close[0]}'?" if close else f"known: {', '.join(expected)}"
            raise ParamsError(f"params: unknown key '{key}.{name}'; {hint}")


def blur_half_width(sigma: float) -> int:
    """How far (px) the elastic field's Gaussian blur pads past each edge: torchvision's kernel
    of int(8 sigma + 1) taps, made odd (deformations.SeparableElastic does the same). Reflect
    padding needs it below the side R: sigma (given at 224 px) below 56 - 28 / R."""
    size = int(8 * sigma + 1)
    size += 1 - size % 2
    return size // 2


def _deform(tree: dict, resolution: int) -> DeformParams:
    for kind in DEFORM_KEYS:
        _deform_mapping(tree, kind)
    sigma = _num(tree, "deform.elastic.sigma", float, 0, lo_open=True)
    side_sigma = sigma * resolution / 224  # deformations.elastic_at: given at 224 px
    if blur_half_width(side_sigma) >= resolution:
        raise ParamsError(
            f"params: 'deform.elastic.sigma' {sigma:g} is too wide for 'model.resolution' "
            f"{resolution}: its blur pads {blur_half_width(side_sigma)} px past the edge of a "
            f"{resolution} px image; use a sigma below {56 - 28 / resolution:g}"
        )
    return DeformParams(
        seed=_seed(tree, "deform.seed"),
        affine={
            "degrees": _num(tree, "deform.affine.degrees", float, 0, 180),
            "translate": _num(tree, "deform.affine.translate", float, 0, 1),
            "scale": _scale_range(tree, "deform.affine.scale"),
            "shear": _num(tree, "deform.affine.shear", float, 0, MAX_SHEAR, hi_open=True),
        },
        perspective={
            "distortion": _num(tree, "deform.perspective.distortion", float, 0, 1),
            "p": _num(tree, "deform.perspective.p", float, 0, 1),
        },
        elastic={
            "alpha": _num(tree, "deform.elastic.alpha", float, 0),
            "sigma": sigma,
            "p": _num(tree, "deform.elastic.p", float, 0, 1),
        },
        preview_images=_num(tree, "deform.preview_images", int, 1),
    )


def _check_strengths(deform: DeformParams, strengths: list[float]) -> None:
    """The robustness sets scale the affine magnitudes by each strength (robustness.scaled):
    the scale range's low end must stay above 0 and the shear below 90 degrees at the largest."""
    top = max(strengths)
    low = deform.affine["scale"][0]
    if low < 1 and 1 - (1 - low) * top <= 0:
        raise ParamsError(
            f"params: 'deform.affine.scale' starts at {low:g}, which the largest "
            f"'robustness.strengths' {top:g} takes to {1 - (1 - low) * top:.3g}; a scale must stay "
            f"above 0 (low > {1 - 1 / top:.3g}, or a smaller strength)"
        )
    if deform.affine["shear"] * top >= MAX_SHEAR:
        raise ParamsError(
            f"params: 'deform.affine.shear' {deform.affine['shear']:g} times the largest "
            f"'robustness.strengths' {top:g} is {deform.affine['shear'] * top:.3g} degrees; it "
            f"must stay below {MAX_SHEAR:g}"
        )


def last_side(resolution: int) -> int:
    """The side of the nets' last feature map: HALVINGS stride-2 layers, each rounding up."""
    side = resolution
    for _ in range(HALVINGS):
        side = (side + 1) // 2
    return side


def _check_batch(batch_size: int, resolution: int) -> None:
    """BatchNorm in training needs more than one value per channel: batch x side x side > 1 at
    the last feature map (a trailing batch of one image is dropped, training.batches)."""
    side = last_side(resolution)
    if batch_size * side * side <= 1:
        raise ParamsError(
            f"params: 'train.batch_size' {batch_size} at 'model.resolution' {resolution} gives "
            f"BatchNorm one value per channel (the last feature map is {side}x{side}); use a "
            f"batch of 2 or more, or a resolution of {2**HALVINGS + 1} or more"
        )


def _check_warmup(pct_start: float, schedules: dict[str, Schedule]) -> None:
    """OneCycleLR divides by zero when its warm-up ends exactly on step 0, i.e. when
    float(pct_start x total steps) == 1 (total = a stage's epochs x steps per epoch, which the
    data decides): refuse a pct_start for which any number of steps per epoch does that."""
    for schedule in schedules.values():
        for epochs in schedule.epochs:
            per_epoch = 1 / (pct_start * epochs)
            if per_epoch > 2**53:  # no float product of such a count is exactly 1
                continue
            per_epoch = round(per_epoch)
            for steps in (per_epoch - 1, per_epoch, per_epoch + 1):
                if steps >= 1 and float(pct_start * (epochs * steps)) == 1.0:
                    raise ParamsError(
                        f"params: 'train.one_cycle.pct_start' {pct_start} makes a warm-up of "
                        f"exactly one step for a stage of {epochs} epoch(s) of "
                        f"'train.schedules.{schedule.name}.epochs' at {steps} step(s) per epoch, "
                        "where OneCycleLR divides by zero; nudge it (e.g. "
                        f"{pct_start * 1.01:.4g})"
                    )


def _extract(tree: dict) -> ExtractParams:
    return ExtractParams(
        max_member_mib=_num(tree, "data.extract.max_member_mib", float, 0, lo_open=True),
        max_total_mib=_num(tree, "data.extract.max_total_mib", float, 0, lo_open=True),
        max_ratio=_num(tree, "data.extract.max_ratio", float, 1),
    )


# ---------------------------------------------------------------------------------------------
# Unknown keys: the dataclasses above are the schema
# ---------------------------------------------------------------------------------------------

# Mappings in params.yaml that no dataclass field reads, with why they exist.
EXTRA_KEYS = {
    "model": set(ARCHS),  # model.<arch>: each net's own knobs, a train-stage param in dvc.yaml
}


def _mapping_of(kind: Any) -> Any:
    """For `dict[str, X]` with X a dataclass, X (each value is checked against it); else None."""
    if typing.get_origin(kind) is dict:
        value = typing.get_args(kind)[1]
        return value if is_dataclass(value) else None
    return None


def unknown_keys(tree: Any, schema: type, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Every key in `tree` that `schema` (a dataclass) does not read, with the keys it does.

    Fields typed as a dataclass are followed; `dict[str, Dataclass]` checks each value; other
    mappings (breed folders, deformation knobs) are left to their own checks.
    """
    if not isinstance(tree, dict):
        return []
    hints = typing.get_type_hints(schema)
    known = [f.name for f in fields(schema)] + sorted(EXTRA_KEYS.get(prefix.rstrip("."), ()))
    found = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if key not in known:
            found.append((name, [f"{prefix}{k}" for k in known]))
        elif key in hints and is_dataclass(hints[key]):
            found += unknown_keys(value, hints[key], f"{name}.")
        elif key in hints and (inner := _mapping_of(hints[key])) and isinstance(value, dict):
            for item, sub in value.items():
                found += unknown_keys(sub, inner, f"{name}.{item}.")
    return found


def check_known_keys(tree: dict) -> None:
    """Refuse the first key no stage reads, naming the closest real key (difflib)."""
    for key, known in unknown_keys(tree, Params):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known here: {', '.join(known)}"
        raise ParamsError(f"params: unknown key '{key}'{hint}")


def parse_params(tree: dict) -> Params:
    """Validate a params tree (as loaded from YAML) into typed configs, section by section;
    the checks across sections sit with the later section."""
    if not isinstance(tree, dict):
        raise ParamsError("params: the file must hold a mapping")
    check_known_keys(tree)
    data = _data_params(tree)
    merge = _merge_params(tree, data)
    split = _split_params(tree)
    resolution = _resolution(tree, "model.resolution")
    deform = _deform(tree, resolution)
    model = _model_params(tree, resolution)
    train = _train_params(tree, resolution)
    robustness = _robustness_params(tree, deform)
    report = _report_params(tree)
    return Params(
        data=data,
        merge=merge,
        split=split,
        deform=deform,
        model=model,
        train=train,
        robustness=robustness,
        report=report,
    )


def _data_params(tree: dict) -> DataParams:
    """data: the breeds, the sources and their archives, synthetic data, extraction limits."""
    breeds = _get(tree, "data.breeds")
    if not isinstance(breeds, list) or len(breeds) < 2 or len(set(breeds)) != len(breeds):
        raise ParamsError("params: 'data.breeds' must list at least 2 distinct breeds")
    data = DataParams(
        breeds=[str(b) for b in breeds],
        sources=_choices(tree, "data.sources", SOURCES),
        stanford=_source(tree, "stanford", breeds),
        dbi=_source(tree, "dbi", breeds),
        synthetic=SyntheticParams(
            per_class=_num(tree, "data.synthetic.per_class", int, 1),
            size=_num(tree, "data.synthetic.size", int, 8, MAX_SYNTHETIC_SIDE),
            seed=_seed(tree, "data.synthetic.seed"),
        ),
        extract=_extract(tree),
    )
    return data


def _merge_params(tree: dict, data: DataParams) -> MergeParams:
    """merge: de-duplication and the size filters (synthetic images must pass them)."""
    merge = MergeParams(
        near_dup_max_bits=_num(tree, "merge.near_dup_max_bits", int, 0, 64),
        min_side=_num(tree, "merge.min_side", int, 1),
        max_aspect=_num(tree, "merge.max_aspect", float, 1),
    )
    if "synthetic" in data.sources and data.synthetic.size < merge.min_side:
        raise ParamsError(
            f"params: 'data.synthetic.size' {data.synthetic.size} is below 'merge.min_side' "
            f"{merge.min_side}: merge would reject every synthetic image"
        )
    return merge


def _split_params(tree: dict) -> SplitParams:
    """split: the val and test shares, their seed, the images every breed must keep."""
    split = SplitParams(
        val=_num(tree, "split.val", float, 0, 1, lo_open=True),
        test=_num(tree, "split.test", float, 0, 1, lo_open=True),
        seed=_seed(tree, "split.seed"),
        min_per_breed=_num(tree, "split.min_per_breed", int, 1),
    )
    if split.val + split.test >= 1:
        total = split.val + split.test
        raise ParamsError(f"params: 'split.val' + 'split.test' must be < 1, got {total}")
    return split


def _model_params(tree: dict, resolution: int) -> ModelParams:
    """model: width multiplier, input side, the DeformConv backend and offset lr."""
    model = ModelParams(
        width_mult=_num(tree, "model.width_mult", float, 0, lo_open=True),
        resolution=resolution,
        deformable=DeformableParams(
            backend=_choice(tree, "model.deformable.backend", DEFORM_BACKENDS),
            offset_lr_mult=_num(tree, "model.deformable.offset_lr_mult", float, 0),
        ),
    )
    return model


def _train_params(tree: dict, resolution: int) -> TrainParams:
    """train: the nets, schedules, one-cycle shape, batches, optimiser, seeds, device,
    precision and augmentation."""
    schedules = _get(tree, "train.schedules")
    if not isinstance(schedules, dict) or not schedules:
        raise ParamsError("params: 'train.schedules' must map at least one schedule name")
    train = TrainParams(
        archs=_choices(tree, "train.archs", ARCHS),
        schedules={name: _schedule(tree, name) for name in schedules},
        one_cycle=OneCycleParams(
            pct_start=_num(tree, "train.one_cycle.pct_start", float, 0, 1, True, True),
            div_factor=_num(tree, "train.one_cycle.div_factor", float, 0, lo_open=True),
            final_div_factor=_num(tree, "train.one_cycle.final_div_factor", float, 0, lo_open=True),
        ),
        batch_size=_num(tree, "train.batch_size", int, 1),
        eval_batch_size=_num(tree, "train.eval_batch_size", int, 1),
        normalize=_bool(tree, "train.normalize"),
        weight_decay=_num(tree, "train.weight_decay", float, 0),
        grad_clip=_num(tree, "train.grad_clip", float, 0, lo_open=True),
        seeds=_seeds(tree, "train.seeds"),
        device=_choice(tree, "train.device", DEVICES),
        amp=_choice(tree, "train.amp", AMPS),
        augment=AugmentParams(
            hflip=_num(tree, "train.augment.hflip", float, 0, 1),
            crop=_choice(tree, "train.augment.crop", CROPS),
            crop_scale=_num(tree, "train.augment.crop_scale", float, 0, 1, lo_open=True),
            crop_pad=_num(tree, "train.augment.crop_pad", float, 0, 0.5),
            rotation=_num(tree, "train.augment.rotation", float, 0, 180),
        ),
    )
    _check_batch(train.batch_size, resolution)
    _check_warmup(train.one_cycle.pct_start, train.schedules)
    return train


def _robustness_params(tree: dict, deform: DeformParams) -> RobustnessParams:
    """robustness: the deformation kinds and strengths (each within the deform stage's)."""
    strengths = _get(tree, "robustness.strengths")
    if not isinstance(strengths, list) or not strengths:
        raise ParamsError("params: 'robustness.strengths' must be a non-empty list")
    for value in strengths:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ParamsError(
                f"params: 'robustness.strengths' must hold numbers >= 0, got {value!r}"
            )
        _number(value, "robustness.strengths")
    if len(set(strengths)) != len(strengths):
        raise ParamsError(f"params: 'robustness.strengths' lists a value twice: {strengths}")
    robustness = RobustnessParams(
        kinds=_choices(tree, "robustness.kinds", ROBUSTNESS_KINDS),
        strengths=[float(v) for v in strengths],
    )
    _check_strengths(deform, robustness.strengths)
    return robustness


def _report_params(tree: dict) -> ReportParams:
    """report: bootstrap resamples and seed, power and the smallest difference of interest."""
    report = ReportParams(
        bootstrap_resamples=_num(tree, "report.bootstrap_resamples", int, MIN_RESAMPLES),
        seed=_seed(tree, "report.seed"),
        power=_num(tree, "report.power", float, 0, 1, lo_open=True),
        min_difference=_num(tree, "report.min_difference", float, 0, 1, lo_open=True),
    )
    if report.power >= 1:
        raise ParamsError(f"params: 'report.power' must be < 1, got {report.power!r}")
    return report


class RunSelectionError(ParamsError):
    """--arch, --schedule or --seed names a run that params.yaml does not list."""


def run_name(arch: str, schedule: str, seed: int) -> str:
    """The name of one trained net everywhere: files, MLflow, and the DVC stage (train@<name>).

    DVC names a matrix stage by its values joined with "-" (train@cnn-s20_14_6-0), so the run
    is spelt the same way, seed last.
    """
    return f"{arch}-{schedule}-{seed}"


def select_run(params: Params, arch: str, schedule: str, seed: int) -> Schedule:
    """The schedule to run, after checking that arch, schedule and seed are listed in params."""
    if seed not in params.train.seeds:
        seeds = ", ".join(str(s) for s in params.train.seeds)
        raise RunSelectionError(f"unknown --seed {seed!r}; params 'train.seeds': {seeds}")
    if arch not in params.train.archs:
        raise RunSelectionError(
            f"unknown --arch {arch!r}; params 'train.archs': {', '.join(params.train.archs)}"
        )
    if schedule not in params.train.schedules:
        known = ", ".join(params.train.schedules)
        raise RunSelectionError(
            f"unknown --schedule {schedule!r}; params 'train.schedules': {known}"
        )
    return params.train.schedules[schedule]


def read_yaml(path: Path) -> Any:
    """Parse a YAML file as YAML 1.2, as DVC does: `5e-05` is a float, `no` is a string.

    DVC writes such floats for `dvc exp run -S key=0.00005`; a YAML 1.1 reader (PyYAML) would
    read them as strings. ruamel.yaml is DVC's own YAML library (pure-Python mode is 1.2).
    """
    return parse_yaml(path.read_text())


def parse_yaml(text: str) -> Any:
    """`read_yaml` of YAML text (a params.yaml read from git, say)."""
    return YAML(typ="safe", pure=True).load(text)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; errors name the file and the key."""
    path = Path(path)
    try:
        tree = read_yaml(path)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    try:
        return parse_params(tree)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
