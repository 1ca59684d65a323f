"""Robustness sets: strength scales the study's deformations; 1 with `all` is the study's."""

from __future__ import annotations

import pytest
import torch
from datagen import tiny_params

from dogbreeds.data import robustness
from dogbreeds.data.deformations import build_deformation, deform_image, image_seed
from dogbreeds.data.prepared import load_split, robustness_file

DEFORM = tiny_params().deform


def test_strength_scales_every_magnitude_and_one_kind_turns_the_others_off():
    double = robustness.scaled(DEFORM, 2.0, "all")
    assert double.affine["degrees"] == 2 * DEFORM.affine["degrees"]
    assert double.affine["shear"] == 2 * DEFORM.affine["shear"]
    low, high = DEFORM.affine["scale"]
    assert double.affine["scale"] == pytest.approx([1 - 2 * (1 - low), 1 + 2 * (high - 1)])
    assert double.perspective["distortion"] == pytest.approx(2 * DEFORM.perspective["distortion"])
    assert double.elastic["alpha"] == 2 * DEFORM.elastic["alpha"]
    assert double.elastic["sigma"] == DEFORM.elastic["sigma"]  # smoothness stays
    assert double.perspective["p"] == DEFORM.perspective["p"]  # `all`: the study's odds

    elastic = robustness.scaled(DEFORM, 1.0, "elastic")
    assert elastic.elastic["p"] == 1.0 and elastic.perspective["p"] == 0.0
    assert elastic.affine == {"degrees": 0.0, "translate": 0.0, "scale": [1.0, 1.0], "shear": 0.0}
    with pytest.raises(robustness.RobustnessError, match="robustness.kinds"):
        robustness.scaled(DEFORM, 1.0, "blur")


def test_strength_one_with_all_is_the_studys_deformed_test_set(prepared):
    clean = load_split(prepared / "test_clean.pt")
    resolution = clean.images.shape[-1]
    study = build_deformation(DEFORM, resolution)
    expected = torch.stack(
        [
            deform_image(image, study, image_seed(DEFORM.seed, image_id))
            for image, image_id in zip(clean.images, clean.ids, strict=True)
        ]
    )
    assert torch.equal(robustness.deform_split(clean, DEFORM, 1.0, "all").images, expected)
    assert robustness.deform_split(clean, DEFORM, 0.0, "elastic") is clean


def test_stronger_deformations_move_more_pixels(prepared):
    clean = load_split(prepared / "test_clean.pt")

    def change(strength: float, kind: str) -> float:
        moved = robustness.deform_split(clean, DEFORM, strength, kind).images.float()
        return (moved - clean.images.float()).abs().mean().item()

    for kind in robustness.KINDS:
        assert change(0.25, kind) < change(2.0, kind), kind


def test_sets_are_written_as_prepared_split_files(prepared, tmp_path):
    out = tmp_path / "robustness"
    robustness.make_robustness_sets(DEFORM, ["affine", "all"], [0.0, 0.5], prepared, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        robustness_file(k, s) for k in ("affine", "all") for s in (0.0, 0.5)
    )
    assert robustness_file("all", 0.5) == "all-0.5.pt"
    clean = load_split(prepared / "test_clean.pt")
    half = load_split(out / "affine-0.5.pt")
    assert half.ids == clean.ids and torch.equal(half.labels, clean.labels)
    assert torch.equal(load_split(out / "all-0.pt").images, clean.images)


def test_sets_do_not_depend_on_the_number_of_workers(prepared, tmp_path):
    """Each set is built in a pool job, each image seeded by its id: 1 or 2 workers, same files."""
    kinds, strengths = ["elastic", "all"], [0.5, 1.0]
    for workers in (1, 2):
        out = tmp_path / f"workers{workers}"
        robustness.make_robustness_sets(DEFORM, kinds, strengths, prepared, out, workers=workers)
    for kind in kinds:
        for strength in strengths:
            name = robustness_file(kind, strength)
            one = load_split(tmp_path / "workers1" / name)
            two = load_split(tmp_path / "workers2" / name)
            assert torch.equal(one.images, two.images) and one.ids == two.ids, name
    expected = robustness.deform_split(load_split(prepared / "test_clean.pt"), DEFORM, 1.0, "all")
    assert torch.equal(load_split(tmp_path / "workers2" / "all-1.pt").images, expected.images)
