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
import typing
from dataclasses import dataclass, fields, is_dataclass, replace
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
class DataParams:
    breeds: list[str]
    sources: list[str]
    stanford: SourceParams
    dbi: SourceParams
    synthetic: SyntheticParams


@dataclass(frozen=True)
class MergeParams:
    near_dup_max_bits: int


@dataclass(frozen=True)
class SplitParams:
    val: float
    test: float
    seed: int


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
    # The seed of the net being trained, one of `seeds` (the engine seeds augmentation with it):
    # seeds[0] as read from params.yaml, set per run by `for_seed`.
    seed: int
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


def _num(
    tree: dict,
    key: str,
    kind: type,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> Any:
    value = _get(tree, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamsError(f"params: '{key}' must be a number, got {value!r}")
    if kind is int and (not isinstance(value, int)):
        raise ParamsError(f"params: '{key}' must be an integer, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ParamsError(f"params: '{key}' must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ParamsError(f"params: '{key}' must be <= {hi}, got {value!r}")
    return kind(value)


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


def _source(tree: dict, name: str, breeds: list[str]) -> SourceParams:
    url = _get(tree, f"data.{name}.url")
    if not isinstance(url, str) or not url:
        raise ParamsError(f"params: 'data.{name}.url' must be a non-empty string")
    sha = _sha256(tree, f"data.{name}.sha256")
    folders = _get(tree, f"data.{name}.folders")
    if not isinstance(folders, dict) or set(folders) != set(breeds):
        raise ParamsError(f"params: 'data.{name}.folders' must map exactly the breeds {breeds}")
    return SourceParams(url=url, sha256=sha, folders={b: str(folders[b]) for b in breeds})


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
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            raise ParamsError(f"params: '{key}.max_lr' must hold numbers > 0, got {lr!r}")
    return Schedule(name=name, epochs=[int(e) for e in epochs], max_lr=[float(x) for x in max_lr])


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
    """Validate a params tree (as loaded from YAML) into typed configs."""
    if not isinstance(tree, dict):
        raise ParamsError("params: the file must hold a mapping")
    check_known_keys(tree)
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
            size=_num(tree, "data.synthetic.size", int, 8),
            seed=_num(tree, "data.synthetic.seed", int),
        ),
    )
    merge = MergeParams(near_dup_max_bits=_num(tree, "merge.near_dup_max_bits", int, 0, 64))
    split = SplitParams(
        val=_num(tree, "split.val", float, 0, 1, lo_open=True),
        test=_num(tree, "split.test", float, 0, 1, lo_open=True),
        seed=_num(tree, "split.seed", int),
    )
    if split.val + split.test >= 1:
        total = split.val + split.test
        raise ParamsError(f"params: 'split.val' + 'split.test' must be < 1, got {total}")
    for key in ("deform.affine", "deform.perspective", "deform.elastic"):
        if not isinstance(_get(tree, key), dict):
            raise ParamsError(f"params: '{key}' must be a mapping")
    _num(tree, "deform.perspective.p", float, 0, 1)
    _num(tree, "deform.elastic.p", float, 0, 1)
    deform = DeformParams(
        seed=_num(tree, "deform.seed", int),
        affine=dict(_get(tree, "deform.affine")),
        perspective=dict(_get(tree, "deform.perspective")),
        elastic=dict(_get(tree, "deform.elastic")),
        preview_images=_num(tree, "deform.preview_images", int, 1),
    )
    model = ModelParams(
        width_mult=_num(tree, "model.width_mult", float, 0, lo_open=True),
        resolution=_resolution(tree, "model.resolution"),
        deformable=DeformableParams(
            backend=_choice(tree, "model.deformable.backend", DEFORM_BACKENDS),
            offset_lr_mult=_num(tree, "model.deformable.offset_lr_mult", float, 0),
        ),
    )
    schedules = _get(tree, "train.schedules")
    if not isinstance(schedules, dict) or not schedules:
        raise ParamsError("params: 'train.schedules' must map at least one schedule name")
    seeds = _seeds(tree, "train.seeds")
    train = TrainParams(
        archs=_choices(tree, "train.archs", ARCHS),
        schedules={name: _schedule(tree, name) for name in schedules},
        one_cycle=OneCycleParams(
            pct_start=_num(tree, "train.one_cycle.pct_start", float, 0, 1, lo_open=True),
            div_factor=_num(tree, "train.one_cycle.div_factor", float, 0, lo_open=True),
            final_div_factor=_num(tree, "train.one_cycle.final_div_factor", float, 0, lo_open=True),
        ),
        batch_size=_num(tree, "train.batch_size", int, 1),
        eval_batch_size=_num(tree, "train.eval_batch_size", int, 1),
        normalize=_bool(tree, "train.normalize"),
        weight_decay=_num(tree, "train.weight_decay", float, 0),
        grad_clip=_num(tree, "train.grad_clip", float, 0, lo_open=True),
        seeds=seeds,
        seed=seeds[0],
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
    strengths = _get(tree, "robustness.strengths")
    if not isinstance(strengths, list) or not strengths:
        raise ParamsError("params: 'robustness.strengths' must be a non-empty list")
    for value in strengths:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ParamsError(
                f"params: 'robustness.strengths' must hold numbers >= 0, got {value!r}"
            )
    if len(set(strengths)) != len(strengths):
        raise ParamsError(f"params: 'robustness.strengths' lists a value twice: {strengths}")
    robustness = RobustnessParams(
        kinds=_choices(tree, "robustness.kinds", ROBUSTNESS_KINDS),
        strengths=[float(v) for v in strengths],
    )
    report = ReportParams(
        bootstrap_resamples=_num(tree, "report.bootstrap_resamples", int, MIN_RESAMPLES),
        seed=_num(tree, "report.seed", int, 0),
        power=_num(tree, "report.power", float, 0, 1, lo_open=True),
    )
    if report.power >= 1:
        raise ParamsError(f"params: 'report.power' must be < 1, got {report.power!r}")
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


class RunSelectionError(ParamsError):
    """--arch, --schedule or --seed names a run that params.yaml does not list."""


def run_name(arch: str, schedule: str, seed: int) -> str:
    """The name of one trained net everywhere: files, MLflow, and the DVC stage (train@<name>).

    DVC names a matrix stage by its values joined with "-" (train@cnn-s20_14_6-0), so the run
    is spelt the same way, seed last.
    """
    return f"{arch}-{schedule}-{seed}"


def for_seed(train: TrainParams, seed: int) -> TrainParams:
    """The train params of the run with this seed (one of train.seeds)."""
    return replace(train, seed=seed)


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
    return YAML(typ="safe", pure=True).load(path.read_text())


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
