"""`python -m dogbreeds recipes`: variants paired by seed against the baseline, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from dogbreeds.commands import recipes


def study(root: Path, runs: dict[str, tuple[float, float, float, float]]) -> Path:
    """A metrics/ folder: run -> (train_acc, val_acc, clean_test_acc, test_acc)."""
    for sub in ("train", "eval"):
        (root / sub).mkdir(parents=True)
    for name, (train, val, clean, test) in runs.items():
        (root / "train" / f"{name}.json").write_text(json.dumps({"train_acc": train,
                                                                 "val_acc": val}))  # fmt: skip
        (root / "eval" / f"{name}.json").write_text(
            json.dumps({"clean_test_acc": clean, "test_acc": test})
        )
        (root / "eval" / f"{name}-robustness.json").write_text("{}")  # not a run: skipped
    return root


# A variant's three seeds: (train_acc, val_acc, clean_test_acc, test_acc) per run
NOAUG = {
    "cnn-s20_14_6-0": (0.80, 0.41, 0.44, 0.38),
    "cnn-s20_14_6-1": (0.84, 0.43, 0.46, 0.40),
    "cnn-s20_14_6-2": (0.81, 0.42, 0.45, 0.41),
}


def test_a_variant_is_paired_by_seed_and_its_interval_is_the_paired_t(tmp_path, capsys):
    base = study(tmp_path / "base", {
        "cnn-s20_14_6-0": (0.70, 0.40, 0.45, 0.40),
        "cnn-s20_14_6-1": (0.72, 0.42, 0.47, 0.44),
        "cnn-s20_14_6-2": (0.68, 0.41, 0.46, 0.42),
        "cnn-s20_14_6-3": (0.99, 0.99, 0.99, 0.99),  # no partner seed: left out
    })  # fmt: skip
    variant = study(tmp_path / "noaug", NOAUG)
    out = tmp_path / "out" / "recipes.md"
    assert recipes.main([f"default={base}", f"noaug={variant}", "--out", str(out)]) == 0
    [row] = json.loads(out.with_suffix(".json").read_text())
    assert row["seeds"] == [0, 1, 2] and row["arch"] == "cnn"

    diffs = [0.80 - 0.70, 0.84 - 0.72, 0.81 - 0.68]
    mean = sum(diffs) / 3
    half = stats.t.ppf(0.975, 2) * stats.tstd(diffs) / 3**0.5
    line = next(x for x in out.read_text().splitlines() if x.startswith("| noaug"))
    assert f"+{mean:.4f} [+{mean - half:.4f}, +{mean + half:.4f}]" in line
    assert f"p {stats.ttest_rel([0.80, 0.84, 0.81], [0.70, 0.72, 0.68]).pvalue:.3f}" in line
    assert "(paper 0.705)" in line  # the paper's train acc of cnn at 20/14/6
    # every val, clean-test difference is +0.01 / -0.01 on each seed: identical, not significant
    assert line.count("identical on every seed") == 2
    assert capsys.readouterr().out.strip() == out.read_text().strip()


def test_a_single_seed_variant_gets_its_difference_and_no_interval(tmp_path):
    base = study(tmp_path / "base", {"deformable-s20_14_6-0": (0.5, 0.4, 0.4, 0.3)})
    variant = study(tmp_path / "224", {"deformable-s20_14_6-0": (0.6, 0.45, 0.5, 0.35)})
    out = tmp_path / "r.md"
    assert recipes.main([f"64px={base}", f"224px={variant}", "--out", str(out)]) == 0
    line = out.read_text().splitlines()[-1]
    assert "| 224px | deformable | s20_14_6 | 0 | 0.6000 (paper 0.770) | +0.1000 |" in line
    assert "[" not in line


def test_bad_arguments_name_what_is_wrong(tmp_path, capsys):
    with pytest.raises(SystemExit):
        recipes.main(["default"])
    assert "expected name=path/to/metrics" in capsys.readouterr().err
    (tmp_path / "empty" / "eval").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no metrics/eval"):
        recipes.main([f"a={tmp_path / 'empty'}", f"b={tmp_path / 'empty'}"])


def test_only_the_runs_the_studys_params_name_count(tmp_path):
    """A workspace's metrics/ keeps an earlier experiment's cnn files: params leave them out."""
    runs = {"cnn-s20_14_6-0": (0.5, 0.4, 0.4, 0.3), "deformable-s20_14_6-0": (0.5, 0.4, 0.4, 0.3)}
    base = study(tmp_path / "base", runs)
    study(tmp_path / "offlr1" / "metrics", runs)
    (tmp_path / "offlr1" / "params.yaml").write_text(
        "train:\n  archs: [deformable]\n  schedules: {s20_14_6: {}}\n  seeds: [0]\n"
    )
    out = tmp_path / "r.md"
    assert (
        recipes.main([f"a={base}", f"b={tmp_path / 'offlr1' / 'metrics'}", "--out", str(out)]) == 0
    )
    assert [r["arch"] for r in json.loads(out.with_suffix(".json").read_text())] == ["deformable"]


def quickstudies(root: Path, runs: dict[str, tuple[str, tuple[float, float, float, float]]]):
    """A folder of `quickstudy run --out` files: file name -> (run name, accuracies), each
    beside a params file whose train.seeds[0] is the file name's last digit."""
    root.mkdir(parents=True)
    for name, (run, (train, val, clean, test)) in runs.items():
        result = {"run": run, "train_acc": train, "val_acc": val, "clean_test_acc": clean,
                  "test_acc": test, "predicted": {}}  # fmt: skip
        (root / f"{name}.json").write_text(json.dumps([result]))
        (root / f"{name}.yaml").write_text(f"train:\n  seeds: [{name[-1]}]\n")
    return root


def test_quickstudy_outputs_pair_by_the_seed_in_their_names_or_their_params(tmp_path):
    base = quickstudies(tmp_path / "ours", {
        "cnn-0": ("cnn-s20_14_6", (0.50, 0.40, 0.45, 0.40)),  # seed from cnn-0.yaml
        "cnn-1": ("cnn-s20_14_6-1", (0.52, 0.41, 0.46, 0.41)),
        "cnn-2": ("cnn-s20_14_6-2", (0.54, 0.42, 0.47, 0.39)),
    })  # fmt: skip
    variant = quickstudies(tmp_path / "template", {
        "cnn-0": ("cnn-s20_14_6", (0.45, 0.40, 0.44, 0.45)),
        "cnn-1": ("cnn-s20_14_6-1", (0.48, 0.41, 0.46, 0.47)),
        "cnn-2": ("cnn-s20_14_6-2", (0.50, 0.42, 0.46, 0.46)),
    })  # fmt: skip
    assert set(recipes.read_study(base)) == {("cnn", "s20_14_6", s) for s in (0, 1, 2)}
    out = tmp_path / "r.md"
    assert recipes.main([f"ours={base}", f"template={variant}", "--out", str(out)]) == 0
    row = json.loads(out.with_suffix(".json").read_text())[0]
    assert row["seeds"] == [0, 1, 2]
    assert row["values"]["test_acc"] == [0.45, 0.47, 0.46]
    assert row["baseline"]["train_acc"] == [0.50, 0.52, 0.54]
    (base / "cnn-0.yaml").unlink()
    with pytest.raises(SystemExit, match="cnn-0.yaml: not found"):
        recipes.read_study(base)


def test_single_seed_rows_do_not_count_in_the_holm_family(tmp_path):
    """A variant run on one seed has no test: the tested row's p is its own, unadjusted."""
    base = study(tmp_path / "base", {
        "cnn-s20_14_6-0": (0.70, 0.40, 0.45, 0.40),
        "cnn-s20_14_6-1": (0.72, 0.42, 0.47, 0.44),
        "cnn-s20_14_6-2": (0.68, 0.41, 0.46, 0.42),
    })  # fmt: skip
    three = study(tmp_path / "three", NOAUG)
    one = study(tmp_path / "one", {"cnn-s20_14_6-0": (0.60, 0.40, 0.40, 0.40)})
    out = tmp_path / "r.md"
    assert recipes.main([f"b={base}", f"three={three}", f"one={one}", "--out", str(out)]) == 0
    line = next(x for x in out.read_text().splitlines() if x.startswith("| three"))
    assert f"p {stats.ttest_rel([0.80, 0.84, 0.81], [0.70, 0.72, 0.68]).pvalue:.3f}" in line
