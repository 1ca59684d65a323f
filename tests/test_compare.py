"""The width x resolution grid: queued with `python -m dogbreeds grid`, run by `dvc queue`,
compared by `python -m dogbreeds compare` (figures and a MobileNet-style table).

The end-to-end test runs a 2x2 grid (alpha 1, 0.5 x sides 32, 24) of two nets on the tiny
synthetic source and checks every table row against the experiment's own committed metrics
files, read back with git, and the figures against the same numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import queue_workers, run, wait_for_experiments
from PIL import Image

from dogbreeds.commands.compare import (
    CompareError,
    collect,
    draw,
    exp_show,
    markdown_table,
    results_of,
    with_sizes,
)
from dogbreeds.commands.compare import main as compare_main
from dogbreeds.commands.grid import GridError, grid_points, schedule_overrides
from dogbreeds.nets.models import net_size
from dogbreeds.params import parse_yaml

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONPATH": "src"}
NET_RGB = {"cnn": (31, 119, 180), "dsc": (255, 127, 14), "deformable": (44, 160, 44)}  # tab:*


# ----------------------------------------------------------------------------- fast checks


def test_grid_points_come_in_the_order_of_mobilenets_tables():
    points = grid_points([0.5, 1.0, 0.25], [40, 64, 56])
    assert [p.label for p in points] == [
        "a1-r64", "a0.5-r64", "a0.25-r64",  # Table 6: every width at the largest side
        "a1-r56", "a1-r40",  # Table 7: the largest width at every side
        "a0.5-r56", "a0.5-r40", "a0.25-r56", "a0.25-r40",
    ]  # fmt: skip
    with pytest.raises(GridError, match="--widths"):
        grid_points([0.0], [64])
    with pytest.raises(GridError, match="--resolutions"):
        grid_points([1.0], [8])


def test_the_grid_keeps_one_schedule_by_deleting_the_others():
    params = ROOT / "params.yaml"
    assert schedule_overrides(params, "s20_14_6") == [
        "~train.schedules.s50_7_3",
        "~train.schedules.s50_14_6",
    ]
    with pytest.raises(GridError, match=r"'s9' is not in .*params.yaml train.schedules"):
        schedule_overrides(params, "s9")


DVC_YAML = """\
stages:
  report:
    cmd: "true"
    params:
      - model
      - train
    metrics:
      - metrics/headline.json:
          cache: false
      - metrics/eval/dsc-s1.json:
          cache: false
      - metrics/train/dsc-s1.json:
          cache: false
"""


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> Path:
    """A DVC repository with a baseline, three saved experiments (headline metrics; per-run
    metrics from before seeds; params without model.resolution) and a queued one; the
    workspace holds the last experiment's files. Nothing is trained: `dvc exp save`."""
    repo = tmp_path_factory.mktemp("experiments")

    def study(width: float, side: int | None, headline: dict, **per_run: dict) -> None:
        model = {"width_mult": width} | ({"resolution": side} if side else {})
        train = {"archs": ["dsc"], "schedules": {"s1": {"epochs": [1]}}}
        (repo / "params.yaml").write_text(yaml.safe_dump({"model": model, "train": train}))
        (repo / "metrics/eval").mkdir(parents=True, exist_ok=True)
        (repo / "metrics/train").mkdir(parents=True, exist_ok=True)
        (repo / "metrics/headline.json").write_text(json.dumps(headline))
        for stage in ("eval", "train"):  # {}: DVC saves no experiment without its outputs
            (repo / "metrics" / stage / "dsc-s1.json").write_text(
                json.dumps(per_run.get(stage, {}))
            )
        run(["git", "add", "-A"], repo)

    def cell(test_acc: float, seconds: float) -> dict:
        means = {"test_acc": test_acc, "clean_test_acc": test_acc + 0.1, "val_acc": 0.5}
        return {"dsc": {"s1": {**means, "wall_time_s": seconds}}}

    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    study(1.0, 32, cell(0.6, 42.0))
    run(["git", "commit", "-qm", "baseline"], repo)
    study(
        0.25, 24, {},
        eval={"test_acc": 0.4, "clean_test_acc": 0.45}, train={"val_acc": 0.3, "wall_time_s": 3.0},
    )  # fmt: skip
    run(["dvc", "exp", "save", "-n", "exp-legacy"], repo)
    study(0.75, None, cell(0.7, 1.0))
    run(["dvc", "exp", "save", "-n", "exp-broken"], repo)
    study(0.5, 32, cell(0.5, 40.0))
    run(["dvc", "exp", "run", "--queue", "-n", "exp-q", "-S", "model.width_mult=0.1"], repo)
    run(["dvc", "exp", "save", "-n", "exp-b"], repo)
    return repo


def test_compare_reads_the_experiments_through_dvc_api(experiments, caplog):
    rows = exp_show(experiments)
    assert {r["Experiment"] for r in rows} == {None, "exp-legacy", "exp-broken", "exp-q", "exp-b"}
    results = collect(rows)
    assert [(r.experiment, r.width_mult, r.resolution, r.test_acc) for r in results] == [
        ("main", 1.0, 32, 0.6),  # the baseline's own results
        ("exp-b", 0.5, 32, 0.5),  # the named experiment wins over the workspace, its copy
        ("exp-legacy", 0.25, 24, 0.4),  # per-run files, from before seeds
    ]  # the queued experiment has no results; exp-broken lacks a param
    assert "skipping exp-broken: params.yaml has no 'model.resolution'" in caplog.text
    main, exp_b, legacy = results
    assert (main.clean_test_acc, main.val_acc, main.train_seconds) == (0.7, 0.5, 42.0)
    assert (legacy.clean_test_acc, legacy.val_acc, legacy.train_seconds) == (0.45, 0.3, 3.0)
    assert [r.experiment for r in collect(rows, select="-b$")] == ["exp-b"]
    broken = next(r for r in rows if r["Experiment"] == "exp-broken")
    with pytest.raises(CompareError, match="exp-x: params.yaml has no 'model.resolution'"):
        results_of("exp-x", broken)


def test_the_compare_command_writes_the_table_and_figures(experiments, tmp_path, capsys):
    table = tmp_path / "table.md"
    compare_main(["--repo", str(experiments), "--out-dir", str(tmp_path), "--table", str(table)])
    rows = table_rows(table.read_text())
    assert rows["0.5 dsc-32"][0] == "0.5000" and rows["0.5 dsc-32"][-1] == "exp-b"
    assert rows["0.25 dsc-24"][:3] == ["0.4000", "0.4500", "0.3000"]
    assert (tmp_path / "accuracy-vs-macs.png").exists()
    assert table.read_text().strip() in capsys.readouterr().out
    for flag in ("-A", "--all-experiments"):  # other baselines: the same experiments here
        again = tmp_path / f"table{flag}.md"
        args = ["--repo", str(experiments), "--out-dir", str(tmp_path), "--table", str(again)]
        compare_main([*args, flag])
        assert again.read_text() == table.read_text()


# ----------------------------------------------------------------------------- end to end


def committed(repo: Path, name: str, path: str) -> str:
    """A file as committed in the DVC experiment `name` (its ref is refs/exps/.../<name>)."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout.split()
    (ref,) = [r for r in refs if r.endswith(f"/{name}")]
    return run(["git", "show", f"{ref}:{path}"], repo).stdout


def table_rows(table: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell (the model label)."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def pixels_of(png: Path, rgb: tuple[int, int, int]) -> int:
    image = np.asarray(Image.open(png).convert("RGB"))
    return int((image == np.array(rgb, dtype=np.uint8)).all(axis=-1).sum())


@pytest.mark.slow
def test_a_queued_2x2_grid_is_compared_in_figures_and_table(project: Path):
    # 1. One command queues the grid: 2 widths x 2 sides, one schedule, two nets.
    grid = [sys.executable, "-m", "dogbreeds", "grid", "--widths", "1", "0.5"]
    grid += ["--resolutions", "32", "24", "--archs", "cnn", "dsc", "--name-prefix", "g"]
    run(grid, project, env=ONE_THREAD)
    names = {f"g-a{w}-r{r}" for w in ("1", "0.5") for r in (32, 24)}
    queued = run(["dvc", "queue", "status"], project).stdout
    assert {line.split()[1] for line in queued.splitlines() if "Queued" in line} == names

    # 2. DVC runs the queue, two at a time (one thread each, one per core); every experiment
    # succeeds.
    with queue_workers(project, jobs=2, env=ONE_THREAD):
        status = wait_for_experiments(project, names)
    assert set(status.values()) == {"Success"}, status
    params = parse_yaml(committed(project, "g-a0.5-r24", "params.yaml"))
    assert params["model"] == {**params["model"], "width_mult": 0.5, "resolution": 24}
    assert list(params["train"]["schedules"]) == ["s20_14_6"]
    assert params["train"]["archs"] == ["cnn", "dsc"]

    # 3. One command compares them: a row per (net, alpha, side) with the experiment's numbers.
    compare = [sys.executable, "-m", "dogbreeds", "compare"]
    shown = run(compare, project, env=ONE_THREAD)
    table = (project / "metrics/accuracy-vs-cost.md").read_text()
    assert table.strip() in shown.stdout
    rows = table_rows(table)
    assert len(rows) == 8
    for width in ("1", "0.5"):
        for side in (32, 24):
            experiment = f"g-a{width}-r{side}"
            for arch in ("cnn", "dsc"):
                row = rows[f"{width} {arch}-{side}"]
                headline = json.loads(committed(project, experiment, "metrics/headline.json"))
                evaluation = headline[arch]["s20_14_6"]  # means over train.seeds
                params, macs = net_size(arch, float(width), side)
                assert row == [
                    f"{evaluation['test_acc']:.4f}",
                    f"{evaluation['clean_test_acc']:.4f}",
                    f"{evaluation['val_acc']:.4f}",
                    f"{macs / 1e6:.2f}",
                    f"{params / 1e6:.4f}",
                    f"{evaluation['wall_time_s']:.0f}",
                    experiment,
                ]
    # cost falls with alpha and side, as in MobileNet's tables
    assert float(rows["0.5 cnn-24"][3]) < float(rows["0.5 cnn-32"][3]) < float(rows["1 cnn-32"][3])
    assert float(rows["0.5 dsc-32"][4]) < float(rows["1 dsc-32"][4])

    # 4. The figures: one line per net and alpha through its sides, in the nets' colours.
    for name in ("accuracy-vs-macs.png", "accuracy-vs-params.png"):
        png = project / "metrics/compare" / name
        assert Image.open(png).format == "PNG"
        assert pixels_of(png, NET_RGB["cnn"]) > 50 and pixels_of(png, NET_RGB["dsc"]) > 50
        assert pixels_of(png, NET_RGB["deformable"]) == 0  # not in this grid
    results = with_sizes(collect(exp_show(project)))
    assert markdown_table(results) == table.strip()
    figure = draw(results, "macs")
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert set(lines) == {"cnn α=1", "cnn α=0.5", "dsc α=1", "dsc α=0.5"}
    for label, line in lines.items():
        arch, width = label.split(" α=")
        points = [r for r in results if r.arch == arch and f"{r.width_mult:g}" == width]
        assert list(line.get_xdata()) == [r.macs / 1e6 for r in points]  # sides 32, then 24
        assert list(line.get_ydata()) == [r.test_acc for r in points]
    labels = sorted(text.get_text() for text in figure.axes[0].texts)
    assert labels == ["24"] * 4 + ["32"] * 4

    # 5. After a new commit, HEAD has no experiments; --all-experiments still finds the grid's.
    run(["git", "commit", "-q", "--allow-empty", "-m", "next"], project)
    none = run(compare, project, check=False, env=ONE_THREAD)
    assert none.returncode == 1 and "error: no evaluated experiments in" in none.stderr
    again = run([*compare, "--all-experiments"], project, env=ONE_THREAD)
    assert table.strip() in again.stdout

    # 6. A selection that matches nothing is one clear error and a non-zero exit.
    failed = run([*compare, "--experiments", "^nothing"], project, check=False, env=ONE_THREAD)
    assert failed.returncode == 1
    assert (
        failed.stderr.strip()
        .splitlines()[-1]
        .startswith("error: no evaluated experiments matching '^nothing'")
    )
