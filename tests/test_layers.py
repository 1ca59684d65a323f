"""The package's folders are layers, and imports run one way: down.

A module may import its own subpackage and any subpackage of a lower layer, never a sibling
of its own layer or anything above it. Lazy imports inside functions count too: they are
still a dependency, only a late one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dogbreeds"

# Lowest first. Within a layer the subpackages are independent of each other.
LAYERS: list[set[str]] = [
    {"__init__"},  # DogbreedsError and the version
    {"compat"},  # the private names of torch, MLflow, DVC and CPython, each with a fallback
    {"common"},  # atomic files, redaction, progress, the stage shell
    {"params"},  # the typed params.yaml
    {"ops"},  # DeformConv and its kernels
    {"nets", "data"},  # the three nets | archives to tensors
    {"training"},  # engine, checkpoint, history, resume
    {"analysis", "tracking"},  # scores, stats, report, plots | MLflow runs
    {"serving"},  # classifier, pyfunc, registry
    {"pipeline"},  # stage functions: train, evaluate
    {"cluster"},  # dvc repro on a Dask cluster (runs git and dvc; imports no stage code)
    {"commands", "__main__"},  # python -m dogbreeds <command>
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}
# Only these may import MLflow (DESIGN.md: tracking is stage level).
MLFLOW_UNITS = {"tracking", "serving", "pipeline", "commands"}
MLFLOW_UNITS |= {"compat"}  # only inside the MLflow shim, imported by serving


def unit_of(path: Path) -> str:
    """The layer unit of a module: its subpackage, or its own name at the package root."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the module, wherever it sits."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)]
            if node.module == "dogbreeds":  # `from dogbreeds import x`: x may be a unit
                found += [(node.lineno, f"dogbreeds.{alias.name}") for alias in node.names]
    return found


def target_unit(name: str) -> str | None:
    """The unit a `dogbreeds.*` import reaches, or None for other packages."""
    parts = name.split(".")
    if parts[0] != "dogbreeds":
        return None
    if len(parts) == 1:
        return "__init__"
    return parts[1] if parts[1] in LAYER else "__init__"  # a name defined in __init__


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer():
    units = {unit_of(path) for path in MODULES}
    assert units <= set(LAYER), f"modules outside LAYERS: {sorted(units - set(LAYER))}"


def upward_imports(path: Path, unit: str) -> list[str]:
    """Every import of `path` (a module of `unit`) that does not run to a lower layer."""
    wrong = []
    for line, name in imports_of(path):
        target = target_unit(name)
        if target is not None and target != unit and LAYER[target] >= LAYER[unit]:
            wrong.append(f"line {line}: {name} ({target}, layer {LAYER[target]})")
    return wrong


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_downward(path):
    unit = unit_of(path)
    wrong = upward_imports(path, unit)
    assert not wrong, f"{path.relative_to(PACKAGE)} ({unit}, layer {LAYER[unit]}) imports {wrong}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_stage_level_code_imports_mlflow(path):
    if unit_of(path) in MLFLOW_UNITS:
        return
    mlflow = [line for line, name in imports_of(path) if name.split(".")[0] == "mlflow"]
    assert not mlflow, f"{path.relative_to(PACKAGE)} imports MLflow (line {mlflow[0]})"


def test_subpackage_markers_hold_only_a_docstring():
    """dvc.yaml leaves __init__.py files out of deps: they must not hold code."""
    for marker in PACKAGE.glob("*/__init__.py"):
        body = ast.parse(marker.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), marker


def test_the_check_catches_upward_and_sideways_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from dogbreeds.common.fs import atomic_path\n"
        "from dogbreeds import DogbreedsError\n"
        "def f():\n"
        "    from dogbreeds.training.engine import train_model\n"
        "    from dogbreeds import data\n"
    )
    assert upward_imports(probe, "nets") == [
        "line 4: dogbreeds.training.engine (training, layer 6)",
        "line 5: dogbreeds.data (data, layer 5)",
    ]
    assert upward_imports(probe, "pipeline") == []
