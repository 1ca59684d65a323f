"""What a release carries: a license stated in three places, a citation that names the report the
project reproduces, a README in every results folder naming each of its files, and a README
short enough to read (at most 250 lines)."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from conftest import ROOT

RESULTS = sorted(p for p in (ROOT / "results").iterdir() if p.is_dir())


def test_the_license_is_mit_in_the_file_the_package_and_the_readme():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (project["license"], project["license-files"]) == ("MIT", ["LICENSE"])
    assert "MIT ([LICENSE](LICENSE))" in (ROOT / "README.md").read_text()


def test_the_citation_names_the_reproduced_report_and_its_authors():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert citation["version"] == project["version"]
    [report] = [r for r in citation["references"] if r["type"] == "report"]
    title = ROOT.parent / "shared" / "reference" / "csc413-group45-report.md"
    if title.exists():  # the report's own first line: "# **CSC413 Group45 Final Project**"
        assert report["title"] in title.read_text().splitlines()[0]
    names = [f"{a['given-names']} {a['family-names']}" for a in report["authors"]]
    assert names == ["Vanessa Yu", "Zuoyu Wang", "Yixuan Chen"]


@pytest.mark.parametrize("study", RESULTS, ids=[p.name for p in RESULTS])
def test_every_results_folder_says_what_each_file_is(study):
    readme = (study / "README.md").read_text()
    assert "python -m dogbreeds" in readme  # the command that wrote or regenerates it
    for path in sorted(study.iterdir()):
        if path.name == "README.md":
            continue
        stem = path.name.split("-")[0] if path.suffix == ".png" else path.name
        named = path.name in readme or f"{path.name}/" in readme or stem in readme
        numbered = re.sub(r"-\d+\.json$", "-N.json", path.name) in readme
        assert named or numbered, f"{study.name}/README.md does not say what {path.name} is"


def test_the_readme_stays_short_and_its_local_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    anchors = {
        re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.M)
    }
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, anchor
    for target in re.findall(r"\]\((?!https?:|#)([^)#]+)", text):
        assert (ROOT / target).exists(), target
