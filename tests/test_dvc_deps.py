"""dvc.yaml lists exactly the code each stage runs, so DVC reruns a stage when, and only when,
code that can change its outputs changes.

Each stage's script is followed through its `dogbreeds.*` imports (transitively, with `ast`,
including imports inside functions); every module reached must be a dep of the stage unless it
is in ALLOWED_UNLISTED, and every code dep must be reached.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dogbreeds"

# Modules a stage runs that cannot change any number or output file it writes, so editing them
# must not make a stage stale. Keep this list short, with the reason for each.
ALLOWED_UNLISTED = {
    "src/dogbreeds/__init__.py": "package marker, version string and the base exception class",
    "src/dogbreeds/common/cli.py": "the stage shell: arguments, logging set-up, one-line errors",
    "src/dogbreeds/common/progress.py": "progress bar and the CPU duration warning: logging only",
    "src/dogbreeds/common/timeline.py": "fixed-cost timestamps, written only when asked to",
}
# Whole subpackages that cannot change an output: every module under them is allowed unlisted.
ALLOWED_PACKAGES = {
    "src/dogbreeds/tracking/": "MLflow logging; MLflow is not a DVC output",
    "src/dogbreeds/serving/": "the logged MLflow model; DVC owns the checkpoint it wraps",
}


def allowed_unlisted(relative: str) -> bool:
    """A module whose edits must not restale a stage (subpackage markers hold a docstring only:
    tests/test_layers.py checks it)."""
    return (
        relative in ALLOWED_UNLISTED
        or relative.endswith("/__init__.py")
        or any(relative.startswith(prefix) for prefix in ALLOWED_PACKAGES)
    )


def module_path(name: str) -> Path | None:
    """src/dogbreeds/<x>.py for a dotted module name `dogbreeds.<x>` (None for others)."""
    if name != "dogbreeds" and not name.startswith("dogbreeds."):
        return None
    folder = PACKAGE.joinpath(*name.split(".")[1:])
    for path in (folder / "__init__.py", folder.with_suffix(".py")):
        if path.exists():
            return path
    return None


def imported_modules(path: Path) -> set[Path]:
    """The package modules `path` imports directly, wherever the import statement sits."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from dogbreeds import tracking` imports a module; `from dogbreeds.x import f` not
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            target = module_path(name)
            if target is not None:
                found.add(target)
                # importing dogbreeds.x.y runs dogbreeds/__init__.py and x/__init__.py first
                for parent in target.parents:
                    if parent == PACKAGE.parent:
                        break
                    found.add(parent / "__init__.py")
    return found


def code_closure(script: Path) -> set[str]:
    """The script and every package module it reaches, as repo-relative paths."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        relative = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        if allowed_unlisted(relative):
            continue  # what only a module that cannot change an output imports cannot either
        todo.extend(imported_modules(path) - seen)
    return {str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in seen}


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_script(stage: dict) -> Path:
    match = re.search(r"python (stages/\S+\.py)", stage["cmd"])
    assert match, f"cmd {stage['cmd']!r} does not run python stages/<stage>.py"
    return ROOT / match.group(1)


@pytest.mark.parametrize("name", list(stages()))
def test_deps_are_exactly_the_code_the_stage_runs(name):
    stage = stages()[name]
    runs = code_closure(stage_script(stage))
    code_deps = {d for d in stage["deps"] if d.endswith(".py")}
    missing = {path for path in runs - code_deps if not allowed_unlisted(path)}
    extra = code_deps - runs
    assert not missing, f"stage {name} runs {sorted(missing)} but does not list them in deps"
    assert not extra, f"stage {name} lists {sorted(extra)} in deps but does not run them"
    listed = sorted(path for path in code_deps if allowed_unlisted(path))
    assert not listed, f"stage {name} lists allowlisted modules {listed}"


def test_the_closure_follows_imports_inside_functions(tmp_path):
    """The walker must see lazy imports (e.g. a plotting import inside a function)."""
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from dogbreeds.analysis.plots import plot_accuracy\n")
    assert "src/dogbreeds/analysis/plots.py" in code_closure(script)
    assert "src/dogbreeds/training/history.py" in code_closure(script)  # plots imports history


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_figures_restale_no_training_or_evaluation(name):
    """Restyling a figure must not rerun 45 trainings or evaluations."""
    deps = set(stages()[name]["deps"])
    assert "src/dogbreeds/analysis/plots.py" not in deps
    assert "src/dogbreeds/analysis/plots.py" not in code_closure(stage_script(stages()[name]))


def test_kernels_restale_no_report():
    """The report reads the sizes the train stage recorded: it runs no net and no kernel."""
    report = stages()["report"]
    runs = code_closure(stage_script(report))
    for path in {*report["deps"], *runs}:
        assert not path.startswith(("src/dogbreeds/ops/", "src/dogbreeds/nets/")), path
