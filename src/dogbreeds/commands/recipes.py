"""`python -m dogbreeds recipes`: one change to the training recipe at a time, against the default.

Each argument is a finished study's `metrics/` folder (the workspace's, or a copy of an
experiment's, with its params.yaml inside or beside it), or a folder of `quickstudy run --out`
JSON files (each beside the params file it ran, `<name>.yaml`), as `name=path`; the first is the
baseline. For every net and schedule the
baseline and a variant share, and every seed they share, it pairs the runs by seed and prints
the variant's mean and its paired difference from the baseline with a 95% t interval, for
train accuracy (last epoch), val accuracy, clean test accuracy and deformed test accuracy:
the numbers that say which change of recipe moves which accuracy.

    python -m dogbreeds recipes default=runs/default/metrics noaug=runs/noaug/metrics \\
        fp32=runs/fp32/metrics --out results/recipes-64px/recipes.md

The p values are Holm-adjusted over the whole table, one family per measure (every variant x
net x schedule row that is tested: two seeds or more, not degenerate); "identical" marks a
difference that is the same on every seed, "untested" one with fewer than 3 distinct values
over the seeds (neither is ever called significant: the degenerate rule of
docs/statistics.md). A variant with one shared seed gets its numbers and no
interval. The paper's value of the same cell is printed beside the variant's, where the paper
has one.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from dogbreeds.analysis.paper import PAPER_RESULTS, PAPER_SCHEDULES
from dogbreeds.analysis.results import fmt_number, read_json
from dogbreeds.analysis.stats import holm, paired_test, t_interval
from dogbreeds.params import read_yaml

MEASURES = {  # column -> (metrics file, key)
    "train_acc": ("train", "train_acc"),
    "val_acc": ("train", "val_acc"),
    "clean_test_acc": ("eval", "clean_test_acc"),
    "test_acc": ("eval", "test_acc"),
}
RUN = re.compile(r"^(?P<arch>[a-z]+)-(?P<schedule>s[0-9_]+)-(?P<seed>\d+)$")
# quickstudy named its runs without the seed until it trained every seed: train.seeds[0]
UNSEEDED_RUN = re.compile(r"^(?P<arch>[a-z]+)-(?P<schedule>s[0-9_]+)$")


@dataclass(frozen=True)
class Row:
    variant: str
    arch: str
    schedule: str
    seeds: tuple[int, ...]
    values: dict[str, tuple[float, ...]]  # measure -> the variant's value per seed
    baseline: dict[str, tuple[float, ...]]  # measure -> the baseline's, same seeds


def study_cells(folder: Path) -> set[tuple[str, str, int]] | None:
    """The (arch, schedule, seed) runs the study's params.yaml names (in the folder or beside
    it), or None without one. A workspace's metrics/ keeps the files of earlier experiments
    whose nets this one does not train; only the params say which runs are this study's."""
    for params in (folder / "params.yaml", folder.parent / "params.yaml"):
        if params.is_file():
            train = (read_yaml(params) or {}).get("train", {})
            schedules, seeds = train.get("schedules", {}), train.get("seeds", [])
            return {
                (a, s, int(x)) for a in train.get("archs", []) for s in schedules for x in seeds
            }
    return None


def read_study(folder: Path) -> dict[tuple[str, str, int], dict[str, float]]:
    """(arch, schedule, seed) -> measure -> value, for every run of the study (its params, if
    found) with train and eval metrics."""
    if not (folder / "eval").is_dir():
        return read_quickstudies(folder)
    cells = study_cells(folder)
    runs = {}
    for path in sorted((folder / "eval").glob("*.json")):
        found = RUN.match(path.stem)
        if not found:  # <run>-robustness.json, <run>-confusion.json
            continue
        if (
            cells is not None
            and (found["arch"], found["schedule"], int(found["seed"])) not in cells
        ):
            continue
        files = {"eval": read_json(path), "train": read_json(folder / "train" / path.name)}
        key = (found["arch"], found["schedule"], int(found["seed"]))
        runs[key] = {m: float(files[f][k]) for m, (f, k) in MEASURES.items()}
    if not runs:
        raise SystemExit(f"error: {folder}: no metrics/eval/<arch>-<schedule>-<seed>.json in it")
    return runs


def read_quickstudies(folder: Path) -> dict[tuple[str, str, int], dict[str, float]]:
    """The same from `quickstudy run --out` files: each `<name>.json` a list of its runs, named
    `<arch>-<schedule>-<seed>` (or, from before quickstudy trained every seed, without the
    seed: then its params file beside it, `<name>.yaml`, says train.seeds[0])."""
    runs = {}
    for path in sorted(folder.glob("*.json")):
        for result in read_json(path):
            found = RUN.match(result["run"]) or UNSEEDED_RUN.match(result["run"])
            if found is None:
                raise SystemExit(f"error: {path}: run {result['run']!r} is not <arch>-<schedule>")
            if "seed" in found.groupdict():
                seed = int(found["seed"])
            elif path.with_suffix(".yaml").is_file():
                seed = int((read_yaml(path.with_suffix(".yaml")) or {})["train"]["seeds"][0])
            else:
                raise SystemExit(
                    f"error: {path.with_suffix('.yaml')}: not found (the params "
                    f"of {path.name}, which names its runs without the seed)"
                )
            runs[found["arch"], found["schedule"], seed] = {m: float(result[m]) for m in MEASURES}
    if not runs:
        raise SystemExit(f"error: {folder}: no metrics/eval/ and no quickstudy JSON files in it")
    return runs


def rows(studies: dict[str, dict]) -> list[Row]:
    """A row per (variant, net, schedule) the variant shares with the baseline (the first)."""
    (base_name, base), *variants = studies.items()
    out = []
    for name, study in variants:
        cells = sorted({(a, s) for a, s, _ in study} & {(a, s) for a, s, _ in base})
        for arch, schedule in cells:
            seeds = tuple(sorted(
                seed for a, s, seed in study if (a, s) == (arch, schedule)
                and (a, s, seed) in base
            ))  # fmt: skip
            values = {m: tuple(study[arch, schedule, x][m] for x in seeds) for m in MEASURES}
            baseline = {m: tuple(base[arch, schedule, x][m] for x in seeds) for m in MEASURES}
            out.append(Row(name, arch, schedule, seeds, values, baseline))
    return out


def paper_value(arch: str, schedule: str, measure: str) -> float | None:
    """The paper's single run of this cell (its test_acc is on the deformed test set)."""
    column = tuple(int(e) for e in schedule.removeprefix("s").split("_"))
    table = PAPER_RESULTS.get(arch, {})
    if column not in PAPER_SCHEDULES or measure not in table:
        return None
    return table[measure][PAPER_SCHEDULES.index(column)]


def holm_over_tested(tests: list) -> list[float | None]:
    """Holm-adjusted p values over the rows that are tested (two seeds or more, not degenerate);
    None for the others, which have no test to count in the family."""
    tested = [i for i, t in enumerate(tests) if t.interval.n >= 2 and not t.degenerate]
    adjusted = holm([tests[i].p_value for i in tested])
    out: list[float | None] = [None] * len(tests)
    for i, p in zip(tested, adjusted, strict=True):
        out[i] = p
    return out


def table(rows_: list[Row], baseline: str) -> str:
    """The Markdown table: per measure, the variant's mean, its paired difference and Holm p."""
    tests = {m: [paired_test(r.values[m], r.baseline[m]) for r in rows_] for m in MEASURES}
    adjusted = {m: holm_over_tested(tests[m]) for m in MEASURES}
    head = "| variant | net | schedule | seeds |"
    rule = "|---|---|---|---|"
    for m in MEASURES:
        head += f" {m} | minus {baseline} [95% CI], Holm p |"
        rule += "---:|---|"
    lines = [head, rule]
    for i, r in enumerate(rows_):
        line = f"| {r.variant} | {r.arch} | {r.schedule} | {','.join(map(str, r.seeds))} |"
        for m in MEASURES:
            mean = fmt_number(t_interval(r.values[m]).mean)
            paper = paper_value(r.arch, r.schedule, "test_acc" if m == "test_acc" else m)
            if paper is not None and m in ("train_acc", "val_acc", "test_acc"):
                mean += f" (paper {paper:.3f})"
            test = tests[m][i]
            ci = test.interval
            if ci.n < 2:
                diff = fmt_number(ci.mean, signed=True)
            elif test.identical:
                diff = f"{fmt_number(ci.mean, signed=True)}, identical on every seed"
            else:
                low, high = fmt_number(ci.low, signed=True), fmt_number(ci.high, signed=True)
                diff = f"{fmt_number(ci.mean, signed=True)} [{low}, {high}], "
                diff += "untested (< 3 distinct)" if test.degenerate else f"p {adjusted[m][i]:.3f}"
            line += f" {mean} | {diff} |"
        lines.append(line)
    return "\n".join(lines)


def parse_study(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"'{text}': expected name=path/to/metrics")
    if not Path(path).is_dir():
        raise argparse.ArgumentTypeError(f"'{path}': not a folder (a study's metrics/)")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds recipes",
        description="One change of the training recipe at a time against the baseline (first).",
    )
    parser.add_argument("studies", nargs="+", type=parse_study, help="name=metrics folder")
    parser.add_argument("--out", type=Path, help="also write the table (.md) and rows (.json)")
    args = parser.parse_args(argv)
    if len(args.studies) < 2:
        parser.error("give a baseline and at least one variant")
    studies = {name: read_study(path) for name, path in args.studies}
    found = rows(studies)
    if not found:
        print(
            "error: no variant shares a net, schedule and seed with the baseline", file=sys.stderr
        )
        return 1
    text = table(found, args.studies[0][0])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        data = [r.__dict__ for r in found]
        args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
