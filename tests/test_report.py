"""The report: paper tables beside ours, sizes, robustness, figures; from metrics files alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from datagen import tiny_params

from dogbreeds import report
from dogbreeds.fsutil import write_json
from dogbreeds.history import EpochRecord, write_history
from dogbreeds.models import build_model, count_params
from dogbreeds.params import Schedule

SCHEDULES = {
    "s20_14_6": {"epochs": [20, 14, 6], "max_lr": [0.01, 0.001, 0.0001]},  # the paper's
    "hot": {"epochs": [50, 7, 3], "max_lr": [0.02, 0.002, 0.0002]},  # paper epochs, other lr
}


def write_run(metrics: Path, name: str, offset: float, epochs: int) -> None:
    """Fake train/eval outputs of one run whose numbers are all `offset` + a row constant."""
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
            "mlflow_run_id": "abc",
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
            "per_class_test_acc": {},
        },
    )
    write_json(metrics / "eval" / f"{name}-confusion.json", [{"actual": "a"}] * 40)


@pytest.fixture
def study(tmp_path):
    """Metrics of cnn and dsc on the paper's 20/14/6 schedule and on a non-paper schedule."""
    params = tiny_params(**{"train.archs": ["cnn", "dsc"], "train.schedules": SCHEDULES})
    for arch, offset in (("cnn", 0.0), ("dsc", 0.1)):
        for name, schedule in SCHEDULES.items():
            write_run(tmp_path / "metrics", f"{arch}-{name}", offset, sum(schedule["epochs"]))
    return params, tmp_path / "metrics"


def test_paper_schedules_get_paper_ours_and_difference(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    cnn = markdown.split("## DogBreedClassificationCNN (`cnn`)")[1].split("##")[0]
    header, _, *rows = [line for line in cnn.splitlines() if line.startswith("|")]
    assert header.split(" | ")[1:4] == ["s20_14_6 (20/14/6) paper", "ours", "Δ"]
    assert "hot (50/7/3 @ 0.02/0.002/0.0002) ours" in header  # not the paper's lr: ours only
    cells = {row.split(" | ")[0].strip("| "): row.strip("| ").split(" | ")[1:] for row in rows}
    assert list(cells) == list(report.ROWS)
    # paper 20/14/6 CNN train_loss 0.9680; ours 1.0000; then the non-paper column
    assert cells["train_loss"] == ["0.9680", "1.0000", "+0.0320", "1.0000"]
    assert cells["test_acc"] == ["0.5101", "0.3000", "-0.2101", "0.3000"]

    dsc = markdown.split("(`dsc`)")[1].split("##")[0]
    assert "| val_acc | 0.4542 | 0.5000 | +0.0458 | 0.5000 |" in dsc
    assert "## DogBreedClassificationDeformableCNN" not in markdown  # not in params


def test_sizes_robustness_timing_and_notes(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    ours = count_params(build_model("cnn", width_mult=0.25))  # alpha 0.25 beside the paper's
    assert f"| DogBreedClassificationCNN | {ours:,} |" in markdown and "| 585,383 |" in markdown
    assert "MACs (16×16)" in markdown
    assert "| dsc | hot | 0.6000 | 0.4000 | -0.2000 |" in markdown
    assert "| cnn-s20_14_6 | cpu | 40 | 1.5 |" in markdown
    assert "`model.deformable.offset_lr_mult` = 0.1" in markdown and "does not state" in markdown
    assert "40 test images" in markdown
    assert (metrics / "report.md").read_text() == markdown


def test_one_accuracy_figure_per_run(study):
    params, metrics = study
    markdown = report.run_report(params, metrics)

    figures = sorted(p.name for p in (metrics / "figures").iterdir())
    assert figures == sorted(
        f"{a}-{s}-accuracy.png" for a in ("cnn", "dsc") for s in ("s20_14_6", "hot")
    )
    assert all((metrics / "figures" / f).read_bytes()[:4] == b"\x89PNG" for f in figures)
    assert "![cnn-hot accuracy](figures/cnn-hot-accuracy.png)" in markdown


def test_a_missing_metrics_file_is_named(study):
    params, metrics = study
    (metrics / "eval" / "dsc-hot.json").unlink()
    with pytest.raises(report.ReportError, match="dsc-hot.json: not found"):
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
    assert report.paper_column(schedule) == column
    assert report.schedule_label(schedule) == label


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


def test_paper_numbers_are_the_reports_tables():
    """Every transcribed number against a verbatim copy of the report's section 4.3 tables, and
    the appendix's params against the totals of the layer-by-layer appendix transcriptions."""
    from test_models import read_appendix

    tables = paper_tables(Path(__file__).parent / "appendix" / "results.md")
    assert tables == {report.NET_NAMES[arch]: rows for arch, rows in report.PAPER_RESULTS.items()}
    for arch, params in report.PAPER_PARAMS.items():
        assert read_appendix(arch)[1] == params
