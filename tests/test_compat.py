"""The private-name shims (dogbreeds.compat): each one's private path against its public
fallback, which `TESTED` selects when the installed package is outside the locked series."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow.models.utils
import mlflow.utils.environment
import pytest
import torch
import torch.nn.functional as F
import voluptuous

from dogbreeds import DogbreedsError, compat
from dogbreeds.params import read_yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def untested(monkeypatch):
    """Every package outside the series the lock tests: the shims take their public paths."""
    monkeypatch.setattr(compat, "TESTED", {name: "0.0" for name in compat.TESTED})


def test_the_installed_packages_are_the_tested_series_and_pyproject_bounds_them():
    assert all(compat.tested(name) for name in compat.TESTED)
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name, series in compat.TESTED.items():
        major, minor = (int(part) for part in series.split("."))
        assert f'"{name}>=' in pyproject and f",<{major}.{minor + 1}" in pyproject, name


def test_native_bf16_from_torch_agrees_with_the_cpu_flags(untested, monkeypatch, tmp_path):
    fallback = compat.native_cpu_bf16()
    monkeypatch.undo()
    assert compat.native_cpu_bf16() == fallback  # torch's CPUID and Linux's flags agree here
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512_bf16\n")
    assert compat.cpu_flags(cpuinfo) == {"fpu", "sse", "avx2", "avx512_bf16"}
    assert compat.cpu_flags(tmp_path / "absent") == set()


def test_the_dynamo_shims_step_down_outside_the_tested_torch(untested):
    assert compat.skip_dynamo_import() == 0
    assert compat.adam_step_without_dynamo() is None


def test_the_unwrapped_adam_step_is_torchs_step_bit_for_bit():
    step = compat.adam_step_without_dynamo()
    assert step is not None and step is not torch.optim.Adam.step
    weights = []
    for use_unwrapped in (False, True):
        torch.manual_seed(0)
        param = torch.nn.Parameter(torch.randn(10))
        optimizer = torch.optim.Adam([param], lr=0.1, weight_decay=1e-4)
        for _ in range(3):
            optimizer.zero_grad()
            (param**2).sum().backward()
            if use_unwrapped:
                with torch.no_grad():
                    step(optimizer)
            else:
                optimizer.step()
        weights.append(param.detach().clone())
    assert torch.equal(*weights)


def per_sample_case():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    bags = 6
    indices = torch.randint(0, 12, (bags * 4,), generator=generator)
    offsets = torch.arange(bags) * 4
    offset2bag = torch.arange(bags).repeat_interleave(4)
    grad = torch.randn(bags, 5, generator=generator, dtype=torch.float64)
    return grad, rows, indices, offsets, offset2bag


def test_per_sample_weights_backward_is_embedding_bags_gradient_both_ways(monkeypatch):
    grad, rows, indices, offsets, offset2bag = per_sample_case()
    weights = torch.rand(len(indices), dtype=torch.float64, requires_grad=True)
    out = F.embedding_bag(indices, rows, offsets, mode="sum", per_sample_weights=weights)
    (expected,) = torch.autograd.grad(out, weights, grad)
    fused = compat.per_sample_weights_backward(grad, rows, indices, offsets, offset2bag)
    monkeypatch.setattr(compat, "TESTED", {name: "0.0" for name in compat.TESTED})
    gathered = compat.per_sample_weights_backward(grad, rows, indices, offsets, offset2bag)
    torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(gathered, expected)


def test_mlflow_checks_are_skipped_inside_and_restored_after():
    names = [(mlflow.utils.environment, "warn_dependency_requirement_mismatches"),
             (mlflow.models.utils, "_validate_serving_input")]  # fmt: skip
    originals = [getattr(module, name) for module, name in names]  # both exist in the series
    with compat.mlflow_checks_skipped():
        assert all(getattr(m, n) is not o for (m, n), o in zip(names, originals, strict=True))
        assert mlflow.models.utils._validate_serving_input("model", "example") is None
    assert [getattr(module, name) for module, name in names] == originals


def test_mlflow_checks_run_outside_the_tested_series(untested):
    original = mlflow.models.utils._validate_serving_input
    with compat.mlflow_checks_skipped():
        assert mlflow.models.utils._validate_serving_input is original


def test_the_lock_check_uses_dvcs_schema_or_the_locks_shape(monkeypatch):
    bad = {"schema": "2.0", "stages": {"train": {"cmd": 1, "outs": "not a list"}}}
    with pytest.raises(voluptuous.Invalid):  # DVC's schema library
        compat.lockfile_schema()(bad)
    monkeypatch.setitem(sys.modules, "dvc.schema", None)  # the name gone: ImportError
    assert compat.lockfile_schema() is compat.lockfile_shape
    assert compat.lockfile_shape({"schema": "2.0", "stages": {}}) == {"schema": "2.0", "stages": {}}
    with pytest.raises(ValueError):
        compat.lockfile_shape(["not", "a", "lock"])


def test_the_repro_planner_or_one_line_naming_the_lock(monkeypatch):
    assert all(callable(fn) for fn in compat.repro_planner())
    monkeypatch.setitem(sys.modules, "dvc.repo.reproduce", None)
    with pytest.raises(DogbreedsError, match="requirements.lock"):
        compat.repro_planner()


EXIT_SCRIPT = textwrap.dedent("""
    import sys
    from dogbreeds import compat

    class Teardown:  # its finaliser runs only in the interpreter's own teardown
        def __del__(self):
            print("teardown ran")

    keep = Teardown()
    if sys.argv[1] == "left-open":
        out = open(sys.argv[2], "w")  # never closed: its buffer exists only in Python
        out.write("every byte")
    if sys.argv[1] == "left-open-gzip":
        import gzip
        out = gzip.open(sys.argv[2], "wt")  # its trailer is written only on close
        out.write("every byte")
    print("stage done", end="")
    compat.exit_now(3)
""")


@pytest.mark.parametrize("case", ["closed", "left-open", "left-open-gzip"])
def test_exit_now_skips_teardown_unless_a_file_is_open_for_writing(tmp_path, case):
    target = tmp_path / "out.txt"
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, case, str(target)], capture_output=True, text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("stage done")
    if case.startswith("left-open"):
        written = target.read_bytes()
        if case.endswith("gzip"):
            written = gzip.decompress(written)  # fails on a file cut before its trailer
        assert written == b"every byte"  # flushed and closed by the ordinary exit
        assert "teardown ran" in proc.stdout
    else:
        assert "teardown ran" not in proc.stdout  # the fast exit: no module teardown


LOCK = """schema: '2.0'
stages:
  merge:
    cmd: python stages/merge.py
    outs:
    - path: data/merged
      md5: 0a1b.dir
"""


@pytest.mark.parametrize("dvc_writer", [True, False], ids=["dvc", "ruamel"])
def test_a_lock_entry_is_written_as_dvc_writes_it(tmp_path, monkeypatch, dvc_writer):
    """Both writers keep what was there, add the entry after it, and lay it out the same way."""
    if not dvc_writer:
        monkeypatch.setitem(sys.modules, "dvc.utils.serialize", None)
    entry = {"cmd": "python stages/report.py", "deps": [{"path": "metrics", "md5": "c3.dir"}]}
    lock, fresh = tmp_path / "dvc.lock", tmp_path / "new" / "dvc.lock"
    lock.write_text(LOCK)
    fresh.parent.mkdir()
    with compat.lockfile_edited(lock) as data:
        data["stages"]["report"] = entry
    with compat.lockfile_edited(fresh) as data:  # no lock yet
        data.setdefault("schema", "2.0")
        data.setdefault("stages", {})["report"] = entry
    report = "  report:\n    cmd: python stages/report.py\n    deps:\n    - path: metrics\n"
    assert lock.read_text() == LOCK + report + "      md5: c3.dir\n"
    assert fresh.read_text() == "schema: '2.0'\nstages:\n" + report + "      md5: c3.dir\n"
    assert compat.lockfile_schema()(read_yaml(lock))["stages"]["report"]
