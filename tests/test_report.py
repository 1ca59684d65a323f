"""The report: paper tables beside ours, sizes, robustness, figures; from metrics files alone."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from datagen import tiny_params
from scipy import stats as scipy_stats

from dogbreeds.analysis import paper, report
from dogbreeds.analysis.stats import seeds_for_power
from dogbreeds.common.fs import write_json
from dogbreeds.nets.models import MODELS
from dogbreeds.params import Schedule
from dogbreeds.training.history import EpochRecord, write_history

SCHEDULES = {
    "s20_14_6": {"epochs": [20, 14, 6], "max_lr": [0.01, 0.001, 0.0001]},  # the paper's
    "hot": {"epochs": [50, 7, 3], "max_lr": [0.02, 0.002, 0.0002]},  # paper epochs, other lr
}


IMAGES = 50  # test images per run: every accuracy below is a whole number of them
PARAMS = {"cnn": 12_345, "dsc": 2_345, "deformable": 13_579}  # what the train stage counted


KINDS = ("elastic", "all")
STRENGTHS = (0.0, 1.0, 2.0)


def write_run(metrics: Path, name: str, offset: float, epochs: int) -> None:
    """Fake train/eval outputs of one run whose numbers are all `offset` + a row constant,
    predictions that carry the run's test accuracies (right on the first 0.3 + offset of the
    deformed and the first 0.6 of the clean test images), and robustness curves falling by 0.1
    per unit of strength from 0.6 + offset."""
    right, clean_right = round((0.3 + offset) * IMAGES), round(0.6 * IMAGES)
    history = [
        EpochRecord(e, min(e, 3), 1e-3, 1.0, 0.5 + offset, 1.1, 0.4 + offset)
        for e in range(1, epochs + 1)
    ]
    write_history(metrics / "train" / f"{name}.tsv", history)
    write_json(
        metrics / "train" / f"{name}.json",
        {
            "train_loss": 1.0 + offset,
            "train_acc": 0.5 + offset,
            "val_loss": 1.1 + offset,
            "val_acc": 0.4 + offset,
            "epochs": epochs,
            "wall_time_s": 90.0,
            "device": "cpu",
            "amp": "off" if name.startswith("dsc") else "bf16",
            "mlflow_run_id": "abc",
            "width_mult": 0.25,
            "resolution": 16,
            "params": PARAMS[name.split("-")[0]],
            "macs": 2_500_000,
        },
    )
    write_json(
        metrics / "eval" / f"{name}.json",
        {
            "test_loss": 1.2 + offset,
            "test_acc": 0.3 + offset,
            "clean_test_loss": 1.0,
            "clean_test_acc": 0.6,
            "val_loss": 1.1,
            "val_acc": 0.4,
            "per_class_test_acc": {"a": 0.0, "b": right / IMAGES, "c": 0.0},
            "confusion": [[0, 0, 0], [0, right, IMAGES - right], [0, 0, 0]],
        },
    )
    rows = ["id,label,test,clean_test"]
    rows += [
        f"img{i},1,{1 if i < right else 2},{1 if i < clean_right else 2}" for i in range(IMAGES)
    ]
    (metrics / "eval" / f"{name}-predictions.csv").write_text("\n".join(rows) + "\n")
    curves = {k: {f"{s:g}": 0.6 + offset - 0.1 * s for s in STRENGTHS} for k in KINDS}
    write_json(metrics / "eval" / f"{name}-robustness.json", curves)


SEEDS = [0, 1, 2]
SPREAD = {0: 0.0, 1: 0.02, 2: 0.04}  # per-seed offsets: mean 0.02, sample sd 0.02
EXTRA = {0: -0.02, 1: 0.0, 2: 0.02}  # the deformable net's lead varies: 0.08, 0.10, 0.12


@pytest.fixture
def study(tmp_path):
    """cnn and deformable on the paper's 20/14/6 schedule and a non-paper one, 3 seeds each.

    The deformable net is better than cnn on deformed test accuracy by 0.08, 0.10 and 0.12 on
    seeds 0-2 (right on 19/21/23 rather than 15/16/17 of the 50 test images, a superset);
    clean accuracy is the same 0.6 (the same 30 images) on every seed."""
    params = tiny_params(
        **{
            "train.archs": ["cnn", "deformable"],
            "train.schedules": SCHEDULES,
            "train.seeds": SEEDS,
            "robustness.kinds": list(KINDS),
            "robustness.strengths": list(STRENGTHS),
        }
    )
    for arch in ("cnn", "deformable"):
        for name, schedule in SCHEDULES.items():
            for seed in SEEDS:
                lead = 0.1 + EXTRA[seed] if arch == "deformable" else 0.0
                offset = lead + SPREAD[seed]
                write_run(
                    tmp_path / "metrics", f"{arch}-{name}-{seed}", offset, sum(schedule["epochs"])
                )
    offsets = {
        f"deformable-{name}-{seed}": {
            "features.3": {
                "clean": 0.5 + SPREAD[seed],
                "deformed": 0.7 + SPREAD[seed] + EXTRA[seed],
            }
        }
        for name in SCHEDULES
        for seed in SEEDS
    }
    write_json(tmp_path / "metrics" / "offsets" / "offsets.json", offsets)
    return params, tmp_path / "metrics"


def section(markdown: str, title: str) -> str:
    return markdown.split(title)[1].split("\n## ")[0]


def test_each_cell_gets_mean_ci_per_seed_values_and_the_paper(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    cnn = section(markdown, "## DogBreedClassificationCNN (`cnn`)")
    t = scipy_stats.t.ppf(0.975, 2)
    half = t * 0.02 / math.sqrt(3)  # the CI of the mean: sd 0.02 over 3 seeds
    one_run = t * 0.02 * math.sqrt(1 + 1 / 3)  # the prediction interval of one run
    # paper 20/14/6 CNN train_loss 0.9680; ours 1.00, 1.02, 1.04: CI [0.9703, 1.0697] misses
    # it, but one run of ours could well land there: PI [0.9206, 1.1194]
    low, high = 1.02 - half, 1.02 + half
    assert low > 0.9680 > 1.02 - one_run
    assert (
        f"| train_loss | s20_14_6 (20/14/6) | 0.9680 | 1.0200 [{low:.4f}, {high:.4f}] "
        f"| [{1.02 - one_run:.4f}, {1.02 + one_run:.4f}] | 1.0000, 1.0200, 1.0400 | yes |"
    ) in cnn
    assert f"[{1.02 - one_run:.4f}, {1.02 + one_run:.4f}]" == "[0.9206, 1.1194]"
    # paper test_acc 0.5101 against ours 0.32, PI [0.2206, 0.4194]: outside
    assert "| test_acc | s20_14_6 (20/14/6) | 0.5101 | 0.3200 [" in cnn
    assert "| [0.2206, 0.4194] | 0.3000, 0.3200, 0.3400 | no |" in cnn
    assert "| paper in PI |" in cnn
    assert "| test_acc | hot (50/7/3 @ 0.02/0.002/0.0002) | - | 0.3200 [" in cnn  # not the paper's
    assert "## DogBreedClassificationDSC" not in markdown  # not in params
    headline = json.loads((metrics / "headline.json").read_text())
    assert headline["deformable"]["hot"] == {
        "test_acc": 0.42, "clean_test_acc": 0.6, "val_acc": 0.52, "wall_time_s": 90.0
    }  # fmt: skip
    assert set(headline) == {"cnn", "deformable"} and set(headline["cnn"]) == set(SCHEDULES)


def test_pairs_get_paired_differences_mcnemar_and_the_two_answers(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    pairs = section(markdown, "## Pairs of nets: paired differences over seeds")
    # deformed test acc: cnn − deformable is -0.08, -0.10, -0.12 (sd 0.02); clean is the same
    # on every seed: reported as such, not as a zero-width interval
    half = scipy_stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    minus = f"-0.1000 [{-0.1 - half:+.4f}, {-0.1 + half:+.4f}]"
    row = f"| cnn − deformable | s20_14_6 | +0.0000 on every seed | {minus} | {minus} |"
    assert row in pairs
    tests = section(markdown, "## Pairs of nets: McNemar's exact test per seed")
    # seed 2: cnn right on 17 images, deformable on 23, nested: 0 vs 6, p = 2 / 2**6
    assert "| cnn vs deformable | hot | 2 | deformed | 0 | 6 | 0.0312 | 0.3750 |" in tests
    assert "| cnn vs deformable | hot | 2 | clean | 0 | 0 | 1.0000 | 1.0000 |" in tests
    assert "12 McNemar tests; 2 have p < 0.05 unadjusted, 0 after Holm" in tests
    assert "Multiple comparisons" in markdown

    answers = section(markdown, "## The paper's two questions")
    # clean accuracy is the same on every seed: never significant, and said so
    generalise = "**Does the deformable net generalise better?** The data cannot decide"
    assert generalise in answers
    assert "vs cnn on hot: +0.0000 on every seed (identical: not tested)" in answers
    # the deformable net loses 0.08-0.12 less to the deformations: p = 0.013 on each
    # schedule (t = 8.66 on 2 df), both below 5% alone: the intersection-union "yes"
    assert "**Does it resist deformation better?** Yes (" in answers
    p = scipy_stats.ttest_1samp([0.08, 0.10, 0.12], 0).pvalue
    assert f"vs cnn on s20_14_6: +0.1000 [{0.1 - half:+.4f}, {0.1 + half:+.4f}], Holm p " in answers
    assert f"Holm p {min(1, 2 * p):.3f}" in answers  # Holm over the 2 schedules: 0.026
    assert "p adjusted by Holm over the 2 comparisons" in answers
    assert "as one family" in answers and "intersection-union" in answers
    # both nets lose 0.1 per unit of strength on their curves: no difference to find
    curve = "**And along the robustness curve (all kinds together, the mean over every strength"
    assert curve in answers
    assert "unevenly spaced)?** The data cannot decide" in answers
    assert "| curve: mean deformed − clean: mean [95% CI] |" in pairs


def test_bootstrap_over_images_and_seeds_is_paired_and_seeded(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    boot = section(markdown, "## Over test images and seeds: bootstrap")
    assert "10,000 resamples (`report.bootstrap_resamples`, seed `report.seed` = 22)" in boot
    # the same 30 clean images right for both nets on every seed: paired, they never differ
    assert "| cnn − deformable | s20_14_6 | +0.0000 [+0.0000, +0.0000] | -0.1000 [" in boot
    # unpaired, a net's own accuracy varies with the images drawn: 30 of 50 right is
    # Binomial(50, 0.6) / 50 over images, whose 95% range is 0.46-0.74
    low, high = (scipy_stats.binom.ppf(q, 50, 0.6) / 50 for q in (0.025, 0.975))
    assert (low, high) == (0.46, 0.74)
    assert f"| cnn | s20_14_6 | 0.6000 [{low:.4f}, {high:.4f}] |" in boot
    answers = section(markdown, "## The paper's two questions")
    assert "Over test images and seeds together (bootstrap, counts from Bonferroni" in answers
    assert "97.50% intervals): Yes." in answers  # resistance: 4-6 images per seed, all one way
    assert markdown == report.run_report(params, metrics)  # seeded: the same report again
    other = replace(params, report=replace(params.report, seed=23))
    assert section(report.run_report(other, metrics), "## Over test images") != boot


def test_seeds_needed_for_each_question(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    table = section(markdown, "## How many seeds would decide")
    # resistance: sd 0.02 over the seeds; seeds to find the stated 0.02 at 0.05, not the
    # observed +0.1 (which 3 seeds would already find)
    needed = seeds_for_power(0.02 / 0.02, 0.8, 0.05)
    assert needed == 10
    row = "| Does it resist deformation better? | cnn | hot | +0.1000 | deformable ahead | 0.0200 |"
    assert f"{row} {needed} |" in table
    assert "**Does it resist deformation better?** About 10 seeds" in table
    assert "to find a true difference of 0.02 with 80% power" in table
    # generalisation: the same on every seed, so there is no spread to estimate from
    assert "| level | 0.0000 | identical on every seed: no spread to estimate from |" in table
    assert "**Does the deformable net generalise better?** No estimate (identical" in table
    assert "at level 0.05 (the level of the yes/no rule" in table
    assert "An estimate, not a promise" in table
    changed = replace(params, report=replace(params.report, min_difference=0.04))
    assert f"{row} 5 |" in section(report.run_report(changed, metrics), "## How many seeds")


def test_identical_differences_are_reported_and_never_significant(study):
    params, metrics = study
    offsets = {
        f"deformable-{name}-{seed}": {
            "features.3": {"clean": 0.5 + SPREAD[seed], "deformed": 0.7 + SPREAD[seed]}
        }
        for name in SCHEDULES
        for seed in SEEDS
    }
    write_json(metrics / "offsets" / "offsets.json", offsets)
    markdown = report.run_report(params, metrics)

    table = section(markdown, "## Learned offsets")
    # 0.2 larger on every seed: an interval of zero width, which is one run's evidence
    assert "| +0.2000 on every seed |" in table
    assert "grow on deformed images in 0, shrink in 0 and are undecided in 2 of 2" in table
    assert "2 not tested (fewer than 3 distinct values)" in table


def test_robustness_curves_average_over_seeds(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    with (metrics / "robustness.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == len(SCHEDULES) * len(KINDS) * 2 * len(STRENGTHS)  # 2 nets
    (row,) = [
        r
        for r in rows
        if (r["schedule"], r["kind"], r["arch"], r["strength"]) == ("hot", "all", "cnn", "2.0")
    ]
    # seeds 0.6 - 0.2 + (0, 0.02, 0.04): mean 0.42, sd 0.02
    half = scipy_stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert float(row["mean"]) == pytest.approx(0.42)
    assert float(row["low"]) == pytest.approx(0.42 - half)
    assert row["seeds"] == "0.4000, 0.4200, 0.4400" and row["n"] == "3"
    assert "![robustness](figures/robustness.png)" in markdown
    at_one = f"0.5200 [{0.52 - half:.4f}, {0.52 + half:.4f}]"
    assert f"| cnn | hot | all | {at_one} | 0.4200 [" in markdown


def test_offsets_clean_vs_deformed_over_seeds(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    table = section(markdown, "## Learned offsets")
    assert "| hot | features.3 | 0.5200 [" in table
    half = scipy_stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)  # 0.18, 0.20, 0.22
    assert f"| +0.2000 [{0.2 - half:+.4f}, {0.2 + half:+.4f}] |" in table
    assert "They grow on deformed images in 2, shrink in 0 and are undecided in 0 of 2" in table
    assert "intersection-union" in table


def test_one_seed_cannot_decide(study):
    params, metrics = study
    params = replace(params, train=replace(params.train, seeds=[0]))
    markdown = report.run_report(params, metrics)
    # generalisation, resistance, the robustness curve, and the offsets
    assert markdown.count("The data cannot decide: with one seed per cell") == 4
    assert "| 0.3000 | - | 0.3000 | - |" in markdown  # mean of one seed, no PI, no verdict
    # the bootstrap still varies the images: an interval for one seed
    boot = section(markdown, "## Over test images and seeds: bootstrap")
    assert "| cnn | hot | 0.6000 [" in boot
    assert "not estimable with one seed" in markdown


def test_sizes_robustness_timing_and_notes(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    # the sizes the train stage recorded (the report builds no net), beside the paper's
    assert "| DogBreedClassificationCNN | 12,345 | 2.5 M | 585,383 |" in markdown
    assert "params (α=0.25) | MACs (16×16)" in markdown
    assert "| deformable | hot | 0.6000 [0.6000, 0.6000] | 0.4200 [" in markdown
    assert "wall" not in markdown.replace("Wall times are run facts", "")  # no run facts
    # the setup line: data kind, recipe and each net's precision as its runs recorded it
    assert "Our runs: real photos from stanford, dbi, resolution 16×16" in markdown
    assert (
        "Recipe: a random crop keeping 0.8-1 of the side; a horizontal flip with probability 0.5;"
        " no rotation; inputs standardised by the training split's channel mean and std."
        in markdown
    )
    assert "Precision: cnn bf16, deformable bf16 (train.amp off)." in markdown
    timing = json.loads((metrics / "timings.json").read_text())
    assert timing["cnn"]["s20_14_6"]["wall_time_s"] == {"median": 90.0, "min": 90.0, "max": 90.0}
    assert timing["cnn"]["s20_14_6"]["device"] == "cpu" and timing["cnn"]["s20_14_6"]["runs"] == 3
    assert "`model.deformable.offset_lr_mult` = 0.1" in markdown and "does not state" in markdown
    assert "50 test images" in markdown
    assert (metrics / "report.md").read_text() == markdown


def test_one_accuracy_and_one_confusion_figure_per_run(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    figures = sorted(p.name for p in (metrics / "figures").iterdir())
    assert figures == sorted(
        [
            f"{a}-{s}-{n}-{figure}.png"
            for a in ("cnn", "deformable")
            for s in ("s20_14_6", "hot")
            for n in SEEDS
            for figure in ("accuracy", "confusion")
        ]
        + ["robustness.png"]
    )
    assert all((metrics / "figures" / f).read_bytes()[:4] == b"\x89PNG" for f in figures)
    assert "![cnn-hot-1 accuracy](figures/cnn-hot-1-accuracy.png)" in markdown


def test_a_missing_metrics_file_is_named(study):
    params, metrics = study
    (metrics / "eval" / "cnn-hot-2-predictions.csv").unlink()
    with pytest.raises(report.ReportError, match="cnn-hot-2-predictions.csv: not found"):
        report.run_report(params, metrics)
    assert not (metrics / "report.md").exists()


@pytest.mark.parametrize(
    ("epochs", "max_lr", "column", "label"),
    [
        ([20, 14, 6], [0.01, 0.001, 0.0001], 0, "20/14/6"),
        ([50, 14, 6], [0.01, 0.001, 0.0001], 2, "50/14/6"),
        ([50, 14, 6], [0.02, 0.002, 0.0002], None, "50/14/6 @ 0.02/0.002/0.0002"),
        ([1, 1, 1], [0.01, 0.001, 0.0001], None, "1/1/1"),
        ([20, 14], [0.01, 0.001], None, "20/14"),
    ],
)
def test_which_paper_column_a_schedule_reproduces(epochs, max_lr, column, label):
    schedule = Schedule("s", epochs, max_lr)
    assert paper.paper_column(schedule) == column
    assert paper.schedule_label(schedule) == label


def paper_tables(path: Path) -> dict[str, dict[str, tuple[float, ...]]]:
    """Parse the verbatim excerpt of the paper's results tables: {class name: {row: values}}."""
    tables: dict[str, dict[str, tuple[float, ...]]] = {}
    current = None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or set(cells[0]) <= {"-"}:
            continue
        if cells[0].endswith(" Results"):
            current = tables.setdefault(cells[0].removesuffix(" Results"), {})
        elif cells[0] != "epoch":
            current[cells[0]] = tuple(float(c) for c in cells[1:])
    return tables


def test_the_reports_class_names_are_the_nets_own():
    assert {arch: net.__name__ for arch, net in MODELS.items()} == paper.NET_NAMES


def test_sizes_from_an_older_train_stage_are_asked_for(study):
    params, metrics = study
    path = metrics / "train" / "cnn-s20_14_6-0.json"
    write_json(path, {k: v for k, v in json.loads(path.read_text()).items() if k != "macs"})
    with pytest.raises(report.ReportError, match="cnn-s20_14_6-0.json lacks macs"):
        report.run_report(params, metrics)


def test_paper_numbers_are_the_reports_tables():
    """Every transcribed number against a verbatim copy of the report's section 4.3 tables, and
    the appendix's params against the totals of the layer-by-layer appendix transcriptions."""
    from test_models import read_appendix

    tables = paper_tables(Path(__file__).parent / "appendix" / "results.md")
    assert tables == {paper.NET_NAMES[arch]: rows for arch, rows in paper.PAPER_RESULTS.items()}
    for arch, params in paper.PAPER_PARAMS.items():
        assert read_appendix(arch)[1] == params
