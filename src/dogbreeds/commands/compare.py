"""Accuracy against cost across DVC experiments: MobileNet's Tables 6-7 for our three nets.

(Just over 400 lines: reading `dvc exp show`, the table and the figures are one command.)

MobileNet shrinks its net with a width multiplier alpha and a smaller input side and reads the
result as accuracy against multiply-adds and parameters. This command does the same for any set
of DVC experiments (the grid that `python -m dogbreeds grid` queues, or any others):

1. `dvc.api.exp_show` lists the experiments with their params and metrics, one row each as
   `dvc exp show` prints them (the metrics files are committed to every experiment, so
   nothing has to be checked out);
2. each experiment's params `train.archs` x `train.schedules` name its cells, and
   `metrics/headline.json` (the study's only DVC metrics file: test_acc, clean_test_acc,
   val_acc and wall_time_s per net and schedule, means over `train.seeds`) gives their
   numbers; experiments from before seeds have per-run metrics instead,
   `metrics/eval/<arch>-<schedule>.json` (test_acc, clean_test_acc) and
   `metrics/train/<arch>-<schedule>.json` (val_acc, wall_time_s), which are read where
   present; `model.width_mult` and `model.resolution` give the size, counted by
   `dogbreeds.nets.models.net_size`;
3. it draws accuracy against MACs and against params (one line per net and alpha, each point
   labelled by its input side) and prints a Markdown table laid out like MobileNet's tables.

    python -m dogbreeds compare                       # experiments of HEAD, and the workspace
    python -m dogbreeds compare --all-experiments --experiments '^mirrors-'

DVC, not MLflow, is the source here: the stages keep every number this needs (and the MLflow
run id) in their metrics files, which exist even when DVC's run cache skipped a training.
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from dogbreeds import DogbreedsError
from dogbreeds.common.proc import git

log = logging.getLogger(__name__)

METRICS = {  # what --metric may plot, and the table's heading for it
    "test_acc": "test acc (deformed)",
    "clean_test_acc": "clean test acc",
    "val_acc": "val acc",
}
NET_COLOURS = {"cnn": "tab:blue", "dsc": "tab:orange", "deformable": "tab:green"}
WIDTH_MARKERS = ("o", "s", "^", "D", "v", "P")  # one per alpha, widest first


class CompareError(DogbreedsError):
    """The experiments cannot be read or compared; the message names the file or param."""


def pre_seed_run_name(arch: str, schedule: str) -> str:
    """The name of one (net, schedule) run before seeds: its metrics files were
    metrics/*/<name>.json. Newer experiments keep per-run files out of DVC's metrics."""
    return f"{arch}-{schedule}"


@dataclass(frozen=True)
class Result:
    """One trained net of one experiment: its size and its accuracies."""

    experiment: str  # the DVC experiment's name, or a commit / "workspace"
    arch: str
    schedule: str
    width_mult: float
    resolution: int
    test_acc: float
    clean_test_acc: float | None
    val_acc: float | None
    train_seconds: float | None
    params: int = 0
    macs: int = 0

    @property
    def key(self) -> tuple[str, str, float, int]:
        return (self.arch, self.schedule, self.width_mult, self.resolution)

    def metric(self, name: str) -> float | None:
        return getattr(self, name)


# ----------------------------------------------------------------------------- reading DVC


def exp_show(repo: Path, revs: list[str] | None = None, num: int = 1) -> list[dict]:
    """`dvc.api.exp_show` in `repo`: the experiments of `revs` (default HEAD; `num` commits
    back from each), their baselines and the workspace, one flat row each.

    A row is `dvc exp show`'s table: "Experiment" (None for a baseline), "rev", "typ"
    ("baseline", "branch_commit", "branch_base"), "State" (None once finished), then one
    column per param and metric, named by its dotted key (`file:key` where two files share
    the key), numbers as floats and anything else as its text ("['cnn', 'dsc']", "None").
    """
    import dvc.api
    from dvc.exceptions import DvcException
    from scmrepo.exceptions import SCMError

    try:
        return dvc.api.exp_show(repo=str(repo), revs=revs or None, num=num)
    except (DvcException, SCMError) as exc:
        raise CompareError(f"dvc.api.exp_show failed in {repo}: {exc}") from exc


def branch_and_tag_commits(repo: Path) -> list[str]:
    """Every commit on a branch or a tag: the baselines `dvc exp show -A` looks at."""
    done = git(repo, "rev-list", "--branches", "--tags")
    if done.returncode != 0:
        raise CompareError(f"git rev-list failed in {repo}: {done.stderr.strip()}")
    return done.stdout.split()


def experiment_baselines(repo: Path) -> list[str]:
    """Every commit that has experiments, found through the experiments' own git refs.

    `dvc exp show -A` looks only at commits on branches and tags, so it misses experiments
    whose baseline was rebased away while a long queue ran; passing each baseline as a rev
    finds them all.
    """
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return sorted(dvc_repo.experiments.ls(all_commits=True))


def experiment_states(rows: list[dict]) -> Iterator[tuple[str, dict]]:
    """(name, row) of every experiment with results: the experiments first, then their
    baseline commits, then the workspace, so that a named experiment wins a tie.

    Queued, running and failed experiments have no results yet and are skipped.
    """
    baselines: list[tuple[str, dict]] = []
    for row in rows:
        rev = str(row.get("rev") or "?")
        if row.get("typ") == "baseline":  # a branch's name, a commit's short sha, "workspace"
            baselines.append((rev, row))
            continue
        name = row.get("Experiment") or rev
        state = row.get("State")
        if state not in (None, "Success") or row.get("Created") is None:
            log.info("skipping experiment %s: %s", name, state or "no results")
            continue
        yield name, row
    workspace = [b for b in baselines if b[0] == "workspace"]
    yield from [b for b in baselines if b[0] != "workspace"] + workspace


def value(text):
    """A cell as DVC wrote it back into a value: "['cnn']" is a list, "None" is None."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def column(row: dict, path: str, key: str):
    """The value of `key` in the file `path` of one row: DVC names the column `key`, or
    `path:key` where another file has the same key."""
    for name in (f"{path}:{key}", key):
        if name in row:
            return value(row[name])
    return None


def param(row: dict, key: str, where: str):
    """A dotted key of params.yaml in one experiment, failing with both named."""
    found = column(row, "params.yaml", key)
    if found is None:
        raise CompareError(f"{where}: params.yaml has no '{key}'")
    return found


def schedules_of(row: dict) -> list[str]:
    """The experiment's train.schedules: the columns train.schedules.<name>.epochs it fills
    (the table has the columns of every experiment shown)."""
    pattern = re.compile(r"^(?:params\.yaml:)?train\.schedules\.([^.]+)\.epochs$")
    names = [m[1] for key in row if (m := pattern.match(key)) and value(row[key]) is not None]
    return list(dict.fromkeys(names))


def number(row: dict, path: str, key: str) -> float | None:
    found = column(row, path, key)
    return float(found) if isinstance(found, (int, float)) and not isinstance(found, bool) else None


def results_of(name: str, row: dict) -> list[Result]:
    """Every evaluated run of one experiment; runs without an evaluation are left out."""
    width = float(param(row, "model.width_mult", name))
    side = int(param(row, "model.resolution", name))
    archs = param(row, "train.archs", name)
    schedules = schedules_of(row)
    if not schedules:
        raise CompareError(f"{name}: params.yaml has no 'train.schedules'")
    results = []
    for arch in archs:
        for schedule in schedules:
            run = pre_seed_run_name(arch, schedule)
            # metrics/headline.json: means over seeds; before seeds, one file per run
            headline = f"{arch}.{schedule}."
            test_acc = number(row, "metrics/headline.json", f"{headline}test_acc")
            if test_acc is not None:
                evaluation = training = ("metrics/headline.json", headline)
            else:
                evaluation = (f"metrics/eval/{run}.json", "")
                training = (f"metrics/train/{run}.json", "")
                test_acc = number(row, evaluation[0], "test_acc")
            if test_acc is None:
                log.debug("%s %s: no test_acc", name, run)
                continue
            results.append(
                Result(
                    experiment=name,
                    arch=arch,
                    schedule=schedule,
                    width_mult=width,
                    resolution=side,
                    test_acc=test_acc,
                    clean_test_acc=number(row, evaluation[0], f"{evaluation[1]}clean_test_acc"),
                    val_acc=number(row, training[0], f"{training[1]}val_acc"),
                    train_seconds=number(row, training[0], f"{training[1]}wall_time_s"),
                )
            )
    return results


def collect(rows: list[dict], select: str | None = None) -> list[Result]:
    """One result per (net, schedule, alpha, side) from `exp_show`'s rows.

    `select` is a regex on the experiment's name. Experiments whose params lack a key this
    needs are skipped with a warning. Where two experiments hold the same point
    (the workspace after `dvc exp apply`, a rerun), the first is kept and the other logged.
    """
    kept: dict[tuple, Result] = {}
    for name, row in experiment_states(rows):
        if select and not re.search(select, name):
            continue
        try:
            results = results_of(name, row)
        except CompareError as exc:  # e.g. a commit from before a param existed (-A)
            log.warning("skipping %s", exc)
            continue
        if not results:
            log.info("skipping %s: no evaluated runs", name)
        for result in results:
            if result.key in kept:
                log.info(
                    "%s %s: already read from %s", name, result.key, kept[result.key].experiment
                )
                continue
            kept[result.key] = result
    return sorted(kept.values(), key=lambda r: (r.arch, r.schedule, -r.width_mult, -r.resolution))


@cache
def _size(arch: str, width_mult: float, resolution: int) -> tuple[int, int]:
    from dogbreeds.nets.models import net_size

    return net_size(arch, width_mult, resolution)


def with_sizes(results: list[Result]) -> list[Result]:
    """The results with params and MACs counted (each size once)."""
    sized = []
    for r in results:
        params, macs = _size(r.arch, r.width_mult, r.resolution)
        sized.append(replace(r, params=params, macs=macs))
    return sized


# ----------------------------------------------------------------------------- table


def model_label(r: Result, schedules: int) -> str:
    """MobileNet's row label, '0.75 MobileNet-192', as '0.75 dsc-56' (+ schedule if several)."""
    label = f"{r.width_mult:g} {r.arch}-{r.resolution}"
    return f"{label} ({r.schedule})" if schedules > 1 else label


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(results: list[Result]) -> str:
    """MobileNet's Tables 6-7 layout: model (alpha net-side), accuracy, mult-adds, params.

    Accuracy is the deformed test set's (the paper's number); clean test and val accuracy and
    the training's wall time follow, then the experiment the row comes from.
    """
    schedules = len({r.schedule for r in results})
    lines = [
        "| model (α net-side) | test acc (deformed) | clean test acc | val acc "
        "| million MACs | million params | train time (s) | experiment |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {model_label(r, schedules)} | {r.test_acc:.4f} | {fmt(r.clean_test_acc, '.4f')} "
            f"| {fmt(r.val_acc, '.4f')} | {r.macs / 1e6:.2f} | {r.params / 1e6:.4f} "
            f"| {fmt(r.train_seconds, '.0f')} | {r.experiment} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


def lines_of(results: list[Result]) -> dict[tuple[str, str, float], list[Result]]:
    """The points of each line (net, schedule, alpha), largest side first."""
    lines: dict[tuple[str, str, float], list[Result]] = {}
    for r in results:
        lines.setdefault((r.arch, r.schedule, r.width_mult), []).append(r)
    for points in lines.values():
        points.sort(key=lambda r: -r.resolution)
    return lines


def draw(results: list[Result], cost: str, metric: str = "test_acc"):
    """Accuracy against `cost` ("macs" or "params"): a matplotlib Figure, one line per net and
    alpha, colour by net, marker by alpha, each point labelled with its input side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted({r.width_mult for r in results}, reverse=True)
    schedules = len({r.schedule for r in results})
    figure, axes = plt.subplots(figsize=(9, 5.5))
    for (arch, schedule, width), points in lines_of(results).items():
        points = [p for p in points if p.metric(metric) is not None]
        if not points:
            continue
        xs = [getattr(p, cost) / 1e6 for p in points]
        ys = [p.metric(metric) for p in points]
        label = f"{arch} α={width:g}" + (f" {schedule}" if schedules > 1 else "")
        axes.plot(
            xs,
            ys,
            color=NET_COLOURS.get(arch, "tab:gray"),
            marker=WIDTH_MARKERS[widths.index(width) % len(WIDTH_MARKERS)],
            label=label,
        )
        for x, y, p in zip(xs, ys, points, strict=True):
            axes.annotate(
                str(p.resolution), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7
            )
    axes.set_xscale("log")
    axes.set_xlabel("million MACs" if cost == "macs" else "million params")
    axes.set_ylabel(METRICS[metric])
    axes.set_title(f"{METRICS[metric]} against {'MACs' if cost == 'macs' else 'params'}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # off the points
    figure.tight_layout()
    return figure


def save_figures(results: list[Result], out_dir: Path, metric: str) -> list[Path]:
    """metrics/compare/accuracy-vs-macs.png and accuracy-vs-params.png."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for cost in ("macs", "params"):
        figure = draw(results, cost, metric)
        path = out_dir / f"accuracy-vs-{cost}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- command


def compare(
    repo: Path,
    revs: list[str] | None,
    out_dir: Path,
    table_path: Path | None,
    select: str | None = None,
    metric: str = "test_acc",
    num: int = 1,
) -> tuple[list[Result], str]:
    """Read the experiments, write both figures (and the table); returns results and table."""
    results = with_sizes(collect(exp_show(repo, revs, num), select))
    if not results:
        which = f" matching {select!r}" if select else ""
        raise CompareError(f"no evaluated experiments{which} in {repo} (dvc exp show)")
    table = markdown_table(results)
    for path in save_figures(results, out_dir, metric):
        log.info("wrote %s", path)
    if table_path:
        table_path.parent.mkdir(parents=True, exist_ok=True)
        table_path.write_text(table + "\n")
        log.info("wrote %s", table_path)
    return results, table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds compare",
        description="Accuracy against MACs and params of DVC experiments: figures and table.",
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository")
    parser.add_argument("-A", "--all-commits", action="store_true", help="as dvc exp show -A")
    parser.add_argument(
        "--all-experiments",
        action="store_true",
        help="every experiment, also of commits no longer on a branch (after a rebase)",
    )
    parser.add_argument("--rev", help="experiments of this baseline commit (default: HEAD)")
    parser.add_argument("-n", "--num", type=int, help="as dvc exp show -n: last N baselines")
    parser.add_argument("--experiments", metavar="REGEX", help="only experiments named so")
    parser.add_argument("--metric", choices=list(METRICS), default="test_acc")
    # not metrics/figures: that folder is the report stage's DVC output, which it rewrites
    parser.add_argument("--out-dir", type=Path, default=Path("metrics/compare"))
    parser.add_argument(
        "--table", type=Path, default=Path("metrics/accuracy-vs-cost.md"), help="Markdown table"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    out_dir = args.out_dir if args.out_dir.is_absolute() else args.repo / args.out_dir
    table = args.table if args.table.is_absolute() else args.repo / args.table
    try:
        revs = [args.rev] if args.rev else []
        revs += branch_and_tag_commits(args.repo) if args.all_commits else []
        revs += experiment_baselines(args.repo) if args.all_experiments else []
        _, text = compare(
            args.repo, list(dict.fromkeys(revs)), out_dir, table, args.experiments, args.metric,
            1 if args.num is None else args.num,
        )  # fmt: skip
    except DogbreedsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(text)


if __name__ == "__main__":
    main()
