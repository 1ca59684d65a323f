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
    "src/dogbreeds/cli.py": "the stage shell: logging set-up and one-line errors",
    "src/dogbreeds/progress.py": "progress bar and the CPU duration warning: logging only",
    "src/dogbreeds/tracking.py": "MLflow logging; MLflow is not a DVC output",
    "src/dogbreeds/registry.py": "MLflow's model registry (evaluate registers champions)",
}


def module_path(name: str) -> Path | None:
    """src/dogbreeds/<x>.py for a dotted module name `dogbreeds.<x>` (None for others)."""
    if name != "dogbreeds" and not name.startswith("dogbreeds."):
        return None
    parts = name.split(".")[1:]
    path = PACKAGE.joinpath(*parts).with_suffix(".py") if parts else PACKAGE / "__init__.py"
    return path if path.exists() else None


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
                # importing dogbreeds.x runs dogbreeds/__init__.py first
                found.add(PACKAGE / "__init__.py")
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
        if relative in ALLOWED_UNLISTED:
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
    missing = runs - code_deps - set(ALLOWED_UNLISTED)
    extra = code_deps - runs
    assert not missing, f"stage {name} runs {sorted(missing)} but does not list them in deps"
    assert not extra, f"stage {name} lists {sorted(extra)} in deps but does not run them"
    assert not code_deps & set(ALLOWED_UNLISTED), f"stage {name} lists an allowlisted module"


def test_the_closure_follows_imports_inside_functions(tmp_path):
    """The walker must see lazy imports (e.g. a plotting import inside a function)."""
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from dogbreeds.plots import plot_accuracy\n")
    assert "src/dogbreeds/plots.py" in code_closure(script)
    assert "src/dogbreeds/history.py" in code_closure(script)  # plots imports history


def test_only_stage_level_modules_import_tracking():
    """Models, data and the engine never import MLflow (DESIGN.md: tracking is stage level)."""
    # tracking logs runs; pyfunc and registry are the MLflow model and registry themselves
    # predict is a command that loads models:/ URIs through MLflow
    stage_level = {
        "train.py",
        "evaluate.py",
        "tracking.py",
        "pyfunc.py",
        "registry.py",
        "predict.py",
    }
    for path in PACKAGE.glob("*.py"):
        if path.name in stage_level:
            continue
        assert PACKAGE / "tracking.py" not in imported_modules(path), path.name
        assert "import mlflow" not in path.read_text(), path.name
