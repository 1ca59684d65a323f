"""`dvc plots` compares experiments, offline: the report stage's wide files
(dogbreeds.analysis.dvcplots), dvc.yaml's top-level plots, and the page template with Vega
inlined (scripts/vega/offline.html, .dvc/config's plots.html_template).

Nothing trains. A throw-away git + DVC repository holds the project's top-level plots, its
report stage's outputs and its DVC config, with the report stage's command replaced by one
that writes what the report would write for fabricated runs (shifted by a param, so two
experiments differ); `dvc exp run` makes two experiments of it and `dvc plots diff` compares
them, as JSON and as the HTML page, which headless Chromium draws with the network cut.
"""

from __future__ import annotations

import configparser
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run
from datagen import tiny_params
from PIL import Image
from servers import headless_chromium

from dogbreeds.analysis.cells import robustness_curves
from dogbreeds.analysis.dvcplots import write_dvc_plots
from dogbreeds.analysis.results import RunResult
from dogbreeds.params import Params, read_yaml
from dogbreeds.training.history import EpochRecord

ARCHS = ("cnn", "dsc", "deformable")
SCHEDULES = ("s20_14_6", "s50_7_3", "s50_14_6")  # the committed ones: dvc.yaml names them
KINDS = ("affine", "perspective", "elastic", "all")
STRENGTHS = (0.0, 0.5, 1.0, 2.0)
EPOCHS = [2, 1, 1]  # 4 epochs per schedule
SEEDS = (0, 1)
CURVES = ("train_acc", "val_acc", "train_loss", "val_loss")
EXPERIMENTS = {"exp-a": 0.1, "exp-b": 0.15}  # experiment name -> shift of every number


def fake_params(seeds: tuple[int, ...] = SEEDS) -> Params:
    return tiny_params(
        **{
            "train.archs": list(ARCHS),
            "train.schedules": {
                s: {"epochs": EPOCHS, "max_lr": [0.01, 0.001, 0.0001]} for s in SCHEDULES
            },
            "train.seeds": list(seeds),
            "robustness.kinds": list(KINDS),
            "robustness.strengths": list(STRENGTHS),
        }
    )


def value(shift: float, arch: str, seed: int) -> float:
    """Every number of a fake run is this plus a constant: nets 0.1 apart, seeds 0.02 apart."""
    return shift + 0.1 * ARCHS.index(arch) + 0.02 * seed


def fake_runs(params: Params, shift: float) -> list[RunResult]:
    """Runs whose history rises 0.05 an epoch and whose robustness falls 0.1 per strength."""
    runs = []
    for arch in params.train.archs:
        for schedule in params.train.schedules.values():
            for seed in params.train.seeds:
                v = value(shift, arch, seed)
                history = [
                    EpochRecord(e, 1, 1e-3, 2 - v, 0.3 + v + 0.05 * e, 2.1 - v, 0.2 + v + 0.05 * e)
                    for e in range(1, sum(schedule.epochs) + 1)
                ]
                robustness = {
                    kind: {f"{s:g}": 0.6 + v - 0.1 * s for s in params.robustness.strengths}
                    for kind in params.robustness.kinds
                }
                runs.append(RunResult(arch, schedule, seed, {}, {}, history, [], robustness))
    return runs


def fake_report(shift: float, metrics: Path = Path("metrics")) -> None:
    """What the report stage writes, for fake runs: the wide files, a figure, the headline."""
    params = fake_params()
    runs = fake_runs(params, shift)
    write_dvc_plots(params, runs, robustness_curves(params, runs), metrics)
    (metrics / "figures").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (int(255 * shift), 90, 160)).save(
        metrics / "figures" / "robustness.png"
    )
    (metrics / "report.md").write_text(f"# fake report, shift {shift}\n")
    (metrics / "robustness.tsv").write_text("schedule\tkind\tarch\tstrength\tmean\n")
    (metrics / "headline.json").write_text(json.dumps({"shift": shift}) + "\n")


def touch_other_outs() -> None:
    """Outputs of the report stage that `fake_report` does not write: an empty file each."""
    stage = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]["report"]
    for entry in stage["outs"] + stage["metrics"]:
        path = Path(next(iter(entry)))
        if not path.exists():
            path.write_text("{}\n" if path.suffix == ".json" else "")


def read_tsv(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


# ----------------------------------------------------------------------------- the files


def test_robustness_is_wide_one_file_per_schedule_and_kind(tmp_path):
    params = fake_params()
    runs = fake_runs(params, 0.0)
    written = write_dvc_plots(params, runs, robustness_curves(params, runs), tmp_path)
    assert {str(p) for p in written} == {
        f"plots/robustness/{s}-{k}.tsv" for s in SCHEDULES for k in KINDS
    } | {f"plots/train/{s}.tsv" for s in SCHEDULES}
    rows = read_tsv(tmp_path / "plots/robustness/s50_7_3-elastic.tsv")
    assert list(rows[0]) == ["strength"] + [f"{a}{e}" for a in ARCHS for e in ("", "_low", "_high")]
    assert [r["strength"] for r in rows] == ["0", "0.5", "1", "2"]
    # dsc at strength 2 over seeds 0 and 1: 0.6 + 0.1 - 0.2 + (0, 0.02): mean 0.51, t CI
    half = 12.7062047 * 0.01  # t(0.975, 1) * sd (0.0141421) / sqrt(2)
    row = rows[3]
    assert float(row["dsc"]) == pytest.approx(0.51)
    assert float(row["dsc_low"]) == pytest.approx(0.51 - half, abs=1e-5)
    assert float(row["dsc_high"]) == pytest.approx(0.51 + half, abs=1e-5)
    assert float(row["deformable"]) == pytest.approx(0.61)


def test_one_seed_leaves_the_interval_empty(tmp_path):
    params = fake_params(seeds=(0,))
    runs = fake_runs(params, 0.0)
    write_dvc_plots(params, runs, robustness_curves(params, runs), tmp_path)
    (row, *_) = read_tsv(tmp_path / "plots/robustness/s20_14_6-all.tsv")
    assert float(row["cnn"]) == pytest.approx(0.6)
    assert row["cnn_low"] == row["cnn_high"] == ""


def test_training_curves_are_each_nets_mean_over_seeds(tmp_path):
    params = fake_params()
    runs = fake_runs(params, 0.0)
    write_dvc_plots(params, runs, robustness_curves(params, runs), tmp_path)
    rows = read_tsv(tmp_path / "plots/train/s20_14_6.tsv")
    assert list(rows[0]) == ["epoch"] + [f"{a}_{c}" for a in ARCHS for c in CURVES]
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    for arch in ARCHS:
        mean = (value(0, arch, 0) + value(0, arch, 1)) / 2
        assert float(rows[2][f"{arch}_val_acc"]) == pytest.approx(0.2 + mean + 0.15)
        assert float(rows[2][f"{arch}_train_loss"]) == pytest.approx(2 - mean)


def test_a_rewrite_replaces_the_folder(tmp_path):
    """metrics/plots is the report stage's output: files of schedules gone from params go."""
    params = fake_params()
    runs = fake_runs(params, 0.0)
    write_dvc_plots(params, runs, robustness_curves(params, runs), tmp_path)
    (tmp_path / "plots" / "train" / "old.tsv").write_text("epoch\n")
    write_dvc_plots(params, runs, robustness_curves(params, runs), tmp_path)
    assert not (tmp_path / "plots" / "train" / "old.tsv").exists()


# ----------------------------------------------------------------------------- dvc.yaml


def test_dvc_yaml_draws_the_nets_of_each_committed_schedule_on_one_chart():
    """The named training charts cover params.yaml's schedules and nets; the robustness plot
    takes every file of the report's robustness folder; the report's PNGs are image plots."""
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    committed = read_yaml(ROOT / "params.yaml")["train"]
    assert tuple(committed["archs"]) == ARCHS and tuple(committed["schedules"]) == SCHEDULES
    plots = {name: props for entry in dvc_yaml["plots"] for name, props in entry.items()}
    assert plots["metrics/plots/robustness"]["x"] == "strength"
    assert plots["metrics/plots/robustness"]["template"] == "band"  # .dvc/plots/band.json
    assert plots["metrics/plots/robustness"]["y"] == list(ARCHS)
    for schedule in SCHEDULES:
        for chart, ending in (("accuracy", "acc"), ("loss", "loss")):
            props = plots[f"{chart}-{schedule}"]
            assert props["x"] == "epoch"
            assert props["y"] == {
                f"metrics/plots/train/{schedule}.tsv": [
                    f"{a}_{split}_{ending}" for a in ARCHS for split in ("train", "val")
                ]
            }
    report = dvc_yaml["stages"]["report"]
    assert {"metrics/plots": {"cache": False}} in report["outs"]
    assert report["plots"] == [{"metrics/figures": {"cache": False}}]
    assert "src/dogbreeds/analysis/dvcplots.py" in report["deps"]


def test_the_project_page_template_is_offline():
    """.dvc/config points DVC to the page with Vega inlined; it loads nothing from the web."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    page = (ROOT / ".dvc" / config["plots"]["html_template"]).resolve()
    assert page == ROOT / "scripts" / "vega" / "offline.html"
    html = page.read_text(encoding="utf-8")
    assert "{plot_divs}" in html and "{scripts}" not in html  # no CDN tags from dvc-render
    assert not re.search(r"<(script|link)\b[^>]*\b(src|href)=", html)  # nothing fetched
    for library in ("vega 5.33.1", "vega-lite 5.23.0", "vega-embed 6.29.0"):
        assert f"<script>/* {library} */" in html
    licenses = (page.parent / "LICENSES").read_text()
    assert all(f"{name}@" in licenses for name in ("vega", "vega-lite", "vega-embed", "d3-array"))


# ----------------------------------------------------------------------------- two experiments


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> Path:
    """A git + DVC repo with the project's plots, report outputs and DVC config, a baseline
    commit and two experiments (exp-a, exp-b) of a fake report stage."""
    repo = tmp_path_factory.mktemp("plots")
    project = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    report = project["stages"]["report"]
    stage = {
        "cmd": "python fake_report.py",
        "deps": ["fake_report.py"],
        "params": ["fake.shift"],
        **{key: report[key] for key in ("outs", "metrics", "plots")},
    }
    dvc_yaml = {"stages": {"report": stage}, "plots": project["plots"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    (repo / "params.yaml").write_text("fake:\n  shift: 0.0\n")
    (repo / "fake_report.py").write_text(
        "from pathlib import Path\n\n"
        "from test_dvcplots import fake_report, touch_other_outs\n"
        "from dogbreeds.params import read_yaml\n\n"
        "fake_report(read_yaml(Path('params.yaml'))['fake']['shift'])\n"
        "touch_other_outs()\n"
    )
    shutil.copytree(ROOT / "scripts" / "vega", repo / "scripts" / "vega")
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}"}
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    run(["dvc", "repro", "-q"], repo, env=env)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    for name, shift in EXPERIMENTS.items():
        run(["dvc", "exp", "run", "-q", "-n", name, "-S", f"fake.shift={shift}"], repo, env=env)
    return repo


def series(plot: dict) -> set[tuple[str, str]]:
    return {(d["rev"], d["field"]) for d in plot["content"]["data"]["values"]}


@pytest.mark.slow
def test_plots_diff_draws_both_experiments_on_each_chart(experiments: Path):
    shown = json.loads(run(["dvc", "plots", "diff", "--json", *EXPERIMENTS], experiments).stdout)
    assert not shown.get("errors"), shown["errors"]
    data = shown["data"]
    revs = set(EXPERIMENTS)
    for schedule in SCHEDULES:
        for kind in KINDS:
            (plot,) = data[f"metrics/plots/robustness/{schedule}-{kind}.tsv"]
            assert plot["type"] == "vega" and set(plot["revisions"]) == revs
            assert series(plot) == {(rev, arch) for rev in revs for arch in ARCHS}
            band, line = plot["content"]["layer"]  # the band template: CI area, mean line
            assert (band["mark"]["type"], line["mark"]["type"]) == ("area", "line")
            points = {
                (d["rev"], d["field"], float(d["strength"])): float(d["dvc_inferred_y_value"])
                for d in plot["content"]["data"]["values"]
            }
            assert len(points) == len(revs) * len(ARCHS) * len(STRENGTHS)
            # the same axes: exp-b's curve is exp-a's shifted by the difference of their shifts
            for arch in ARCHS:
                for s in STRENGTHS:
                    a, b = points["exp-a", arch, s], points["exp-b", arch, s]
                    assert math.isclose(b - a, 0.05, abs_tol=1e-5)
        for chart, ending in (("accuracy", "acc"), ("loss", "loss")):
            (plot,) = data[f"{chart}-{schedule}"]
            fields = {f"{a}_{split}_{ending}" for a in ARCHS for split in ("train", "val")}
            assert series(plot) == {(rev, f) for rev in revs for f in fields}
            epochs = {int(d["epoch"]) for d in plot["content"]["data"]["values"]}
            assert epochs == {1, 2, 3, 4}
            assert plot["content"]["encoding"]["x"]["field"] == "epoch"
    images = data["metrics/figures/robustness.png"]
    assert {image["type"] for image in images} == {"image"}
    assert {rev for image in images for rev in image["revisions"]} == revs
    assert set(data) == {
        *(f"metrics/plots/robustness/{s}-{k}.tsv" for s in SCHEDULES for k in KINDS),
        *(f"{c}-{s}" for c in ("accuracy", "loss") for s in SCHEDULES),
        "metrics/figures/robustness.png",
    }


# ----------------------------------------------------------------------------- the browser

# Counts, per chart, what vega-embed drew: wraps window.vegaEmbed as the inlined library
# defines it, renders SVG, and records each view's series (rev, field) and line paths.
RECORD_EMBEDS = """
window.__embeds = [];
let real;
Object.defineProperty(window, 'vegaEmbed', {
  configurable: true,
  get() { return real && ((el, spec, opts) => {
    const done = real(el, spec, {...(opts || {}), renderer: window.__renderer || 'canvas'});
    window.__embeds.push(done.then(
      (r) => ({id: el, ok: true}), (e) => ({id: el, ok: false, error: String(e)})));
    return done;
  }); },
  set(value) { real = value; },
});
"""

DRAWN = """
const done = arguments[arguments.length - 1];
Promise.all(window.__embeds || []).then((embeds) => done(embeds.map((e) => {
  const div = document.querySelector(e.id);
  const legend = [...div.querySelectorAll('.role-legend-label text')].map((t) => t.textContent);
  const drawn = (mark) => [...div.querySelectorAll(`.mark-${mark} path`)].filter(
    (p) => (p.getAttribute('d') || '').length > 20).length;
  return {...e, marks: !!div.querySelector('.marks'), legend, lines: drawn('line'),
          bands: drawn('area')};
})));
"""


def browser(offline_page: Path, renderer: str) -> list[dict]:
    """Open the page in headless Chromium with every network request failing; return what each
    vegaEmbed call drew."""
    driver = headless_chromium(
        "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
        "--window-size=1400,1000",
    )  # fmt: skip
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        offline = {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0}
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
        script = f"window.__renderer = '{renderer}';" + RECORD_EMBEDS
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})
        driver.set_script_timeout(120)
        driver.get(offline_page.as_uri())
        drawn = driver.execute_async_script(DRAWN)
        driver.save_screenshot(str(offline_page.with_suffix(f".{renderer}.png")))
        return drawn
    finally:
        driver.quit()


@pytest.mark.slow
def test_the_diff_page_draws_every_series_with_no_network(experiments: Path, tmp_path):
    """`dvc plots diff exp-a exp-b` with the project's template, opened with the network cut:
    every chart is drawn (canvas, as DVC embeds it) with both experiments' lines for each net;
    DVC's own page draws nothing there (its Vega comes from a CDN)."""
    out = tmp_path / "offline"
    run(["dvc", "plots", "diff", "-o", str(out), *EXPERIMENTS], experiments)
    page = out / "index.html"
    assert "cdn.jsdelivr" not in page.read_text(encoding="utf-8")
    charts = 4 * len(SCHEDULES) + 2 * len(SCHEDULES)
    drawn = browser(page, "canvas")
    assert len(drawn) == charts and all(d["ok"] and d["marks"] for d in drawn), drawn
    drawn = browser(page, "svg")
    assert len(drawn) == charts and all(d["ok"] and d["marks"] for d in drawn), drawn
    for chart in drawn:
        fields = 3 if "robustness" in chart["id"] else 6
        series_count = len(EXPERIMENTS) * fields
        assert chart["lines"] >= series_count, chart  # a line per series (and its raw twin)
        if "robustness" in chart["id"]:
            assert chart["bands"] == series_count, chart  # and a 95% CI band each
        assert set(EXPERIMENTS) <= set(chart["legend"]), chart
        names = {label for label in chart["legend"] if label not in EXPERIMENTS}
        assert len(names) == fields, chart
        assert all(name.startswith(ARCHS) for name in names), chart
    assert (out / "index.svg.png").stat().st_size > 20_000  # the screenshot of the svg page

    # DVC's page (no template): with no network, no chart is drawn.
    run(["dvc", "config", "--unset", "plots.html_template"], experiments)
    try:
        cdn = tmp_path / "cdn"
        run(["dvc", "plots", "diff", "-o", str(cdn), *EXPERIMENTS], experiments)
        assert "cdn.jsdelivr" in (cdn / "index.html").read_text(encoding="utf-8")
        assert browser(cdn / "index.html", "canvas") == []  # vegaEmbed never defined
    finally:
        shutil.copy(ROOT / ".dvc" / "config", experiments / ".dvc" / "config")
