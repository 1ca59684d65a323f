"""Docs that cannot drift: what README.md and docs/*.md name mechanically must exist.

A command (`python -m dogbreeds <command>`), a make target (`make <target>`), a params key
(`train.augment.hflip`), a relative link or file path, a run name: each is checked against the
code, the Makefile, params.yaml and the tree. Prose is left to readers; these are the facts a
rename silently breaks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

from dogbreeds.__main__ import COMMANDS
from dogbreeds.params import read_yaml, run_name

DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
README_MAX_LINES = 250
SECTIONS = ("data", "merge", "split", "deform", "model", "train", "robustness", "report")


def code_of(text: str) -> str:
    """The text inside fenced blocks and `code spans`: where commands and keys are named."""
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    rest = re.sub(r"```.*?```", "", text, flags=re.S)
    return "\n".join(fenced + re.findall(r"`([^`\n]+)`", rest))


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.M))
    for phony in re.findall(r"^\.PHONY:(.*)$", text, flags=re.M):
        targets |= set(phony.split())
    return targets


def has_key(tree: dict, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_named_command_exists(doc: Path) -> None:
    code = code_of(doc.read_text())
    named = set(re.findall(r"python -m dogbreeds(?:\s+|\.)([a-z_]+)", code))
    dotted = set(re.findall(r"python -m dogbreeds\.([a-z_]+)", code))
    assert not dotted, (
        f"{doc_id(doc)}: `python -m dogbreeds.<x>`; the CLI is `python -m dogbreeds <x>`"
    )
    assert named <= set(COMMANDS), f"{doc_id(doc)} names unknown commands {named - set(COMMANDS)}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_named_make_target_exists(doc: Path) -> None:
    named = set(re.findall(r"(?:^|[\s;(&|])make ([a-z][\w-]*)", code_of(doc.read_text()), re.M))
    assert named <= make_targets(), (
        f"{doc_id(doc)} names unknown make targets {named - make_targets()}"
    )


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_named_params_key_exists(doc: Path) -> None:
    tree = read_yaml(ROOT / "params.yaml")
    spans = re.findall(r"`([^`\n]+)`", doc.read_text())
    keys = set()
    for span in spans:
        if "unknown key" in span:  # a message quoting a typo'd key on purpose
            continue
        pattern = r"(?<![\w/.-])((?:" + "|".join(SECTIONS) + r")\.[a-z_][\w.]*)"
        for token in re.findall(pattern, span):
            token = token.rstrip(".")
            parts = token.split(".")
            module = ROOT / "src" / "dogbreeds" / parts[0] / f"{parts[1]}.py"
            if module.exists() or re.search(r"\.(py|md|json|tsv|csv|pt|png|yaml|lock)$", token):
                continue  # a module of the package (data.merge.merge_sources) or a file name
            keys.add(token)
    missing = sorted(k for k in keys if not has_key(tree, k))
    assert not missing, f"{doc_id(doc)} names params keys that params.yaml lacks: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_relative_link_and_path_resolves(doc: Path) -> None:
    text = doc.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (doc.parent / target.split("#")[0]).exists():
            broken.append(target)
    for span in re.findall(r"`([^`\s]+)`", text):  # repository paths named in code spans
        named = re.match(r"(src|stages|tests|scripts|docs|results)/[\w./-]+$", span)
        if named and "<" not in span and "*" not in span and not (ROOT / span).exists():
            broken.append(span)
    assert not broken, f"{doc_id(doc)}: links or paths that do not resolve: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_run_names_have_the_run_name_form(doc: Path) -> None:
    """A run is named `<arch>-<schedule>-<seed>` everywhere (params.run_name): a name without
    its seed is the form from before seeds, which no stage, file or MLflow run uses now."""
    code = code_of(doc.read_text())
    stale = []
    for arch, schedule, seed in re.findall(r"\b(cnn|dsc|deformable)-(s\d+_\d+_\d+)(-\d+)?", code):
        if not seed:
            stale.append(f"{arch}-{schedule}")
        else:
            assert f"{arch}-{schedule}{seed}" == run_name(arch, schedule, int(seed[1:]))
    assert not stale, f"{doc_id(doc)}: run names without their seed: {sorted(set(stale))}"


def test_the_readme_stays_short() -> None:
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


@pytest.mark.parametrize("name", ["params.yaml", "dvc.yaml"])
def test_config_comments_name_real_commands(name: str) -> None:
    text = (ROOT / name).read_text()
    dotted = re.findall(r"python -m dogbreeds\.([a-z_]+)", text)
    assert not dotted, (
        f"{name}: `python -m dogbreeds.{dotted[0]}`; the CLI is `python -m dogbreeds <x>`"
    )
    named = set(re.findall(r"python -m dogbreeds ([a-z_]+)", text))
    assert named <= set(COMMANDS), f"{name} names unknown commands {named - set(COMMANDS)}"


def test_the_layer_table_names_every_package_and_command() -> None:
    """docs/development.md is where a newcomer finds each part of the package."""
    text = (ROOT / "docs" / "development.md").read_text()
    packages = sorted(
        p.name for p in (ROOT / "src" / "dogbreeds").iterdir() if (p / "__init__.py").exists()
    )
    missing = [f"{p}/" for p in packages if f"`{p}/`" not in text]
    missing += [c for c in COMMANDS if f"`{c}`" not in text and f"{c}.py" not in text]
    assert not missing, f"docs/development.md leaves out {missing}"
