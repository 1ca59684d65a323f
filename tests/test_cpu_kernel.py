"""The C++ DeformConv kernel's build folder (ops/cpu_kernel.py): named by everything the build
compiles against, the kernel source and the torch installation, so two virtual environments
never share (and rebuild over) one folder, while one installation reuses its build."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from dogbreeds.ops import cpu_kernel as kernels

# A second virtual environment's torch: another path, as torch's builder would write it.
ELSEWHERE = "/elsewhere/.venv/lib/python3.11/site-packages/torch"
SECOND_VENV = {
    "torch_include": [f"{ELSEWHERE}/include", f"{ELSEWHERE}/include/torch/csrc/api/include"],
    "torch_lib": [f"{ELSEWHERE}/lib"],
}


def this_installation(**changes) -> dict[str, object]:
    return {**kernels.torch_installation(), **changes}


def test_one_installation_has_one_name():
    assert kernels.extension_name() == kernels.extension_name()
    assert kernels.extension_name() == kernels.extension_name(kernels.torch_installation())
    assert kernels.extension_name().startswith(
        f"dogbreeds_deform_cpu_{kernels.cpu_fingerprint()}_{kernels.source_fingerprint()}_"
    )
    assert kernels.extension_name().isidentifier()  # it is the Python module's name too


@pytest.mark.parametrize(
    "changes",
    [
        SECOND_VENV,
        {"torch_version": "2.13.0+cpu"},
        {"torch_cuda": None},
        {"torch_git": "0" * 40},
        {"cxx11_abi": False},
        {"python_abi": ".cpython-312-x86_64-linux-gnu.so"},
        {"python_include": "/usr/include/python3.12"},
        {"cxx": "clang++"},
        {"cflags": ["-O2"]},
    ],
    ids=lambda changes: "+".join(changes),
)
def test_another_installation_gets_another_name(changes):
    assert kernels.extension_name(this_installation(**changes)) != kernels.extension_name()


def test_the_key_reads_the_installed_torch(monkeypatch):
    """What the key reads is this process's torch: its paths and its version."""
    from torch.utils import cpp_extension

    name = kernels.extension_name()
    monkeypatch.setattr(cpp_extension, "include_paths", lambda: SECOND_VENV["torch_include"])
    assert kernels.torch_installation()["torch_include"] == SECOND_VENV["torch_include"]
    assert kernels.extension_name() != name
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    assert kernels.extension_name() != name
    monkeypatch.undo()
    assert kernels.extension_name() == name


def test_each_installation_builds_in_its_own_folder(monkeypatch, tmp_path):
    """The build goes to $TORCH_EXTENSIONS_DIR/<name> with the source copied into it: the same
    folder and command again for this installation, another folder for a second venv's."""
    from torch.utils import cpp_extension

    calls = []

    def load(**kwargs):
        calls.append(kwargs)
        return types.ModuleType(kwargs["name"])

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", load)
    kernels._build.cache_clear()
    try:
        kernels.cpu_kernel()
        kernels._build.cache_clear()
        kernels.cpu_kernel()
        second_venv = this_installation(**SECOND_VENV)
        monkeypatch.setattr(kernels, "torch_installation", lambda: second_venv)
        kernels._build.cache_clear()
        kernels.cpu_kernel()
    finally:
        kernels._build.cache_clear()  # the next caller loads the real kernel
    first, again, second = calls
    assert again == first
    assert first["build_directory"] == str(tmp_path / first["name"])
    assert Path(first["build_directory"]).is_dir()  # torch's build lock is created in it
    assert first["sources"] == [str(tmp_path / first["name"] / kernels.SOURCE.name)]
    assert Path(first["sources"][0]).read_bytes() == kernels.SOURCE.read_bytes()
    assert second["name"] != first["name"]
    assert second["build_directory"] == str(tmp_path / second["name"])


LOAD = """
import json, sys
from dogbreeds.ops import cpu_kernel as k
changes = json.loads(sys.argv[1])
if changes:
    installed = k.torch_installation
    k.torch_installation = lambda: {**installed(), **changes}
k.cpu_kernel()
print(k.build_directory(k.extension_name()))
"""


def load_in_a_process(changes: dict) -> Path:
    """Load the kernel in a fresh process, as if its torch installation differed by `changes`;
    the build folder it used."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD, json.dumps(changes)],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip().splitlines()[-1])


def build_outputs(folder: Path) -> dict[str, int]:
    return {
        p.name: p.stat().st_mtime_ns
        for p in folder.iterdir()
        if p.suffix in {".so", ".o", ".ninja", ".cpp"}
    }


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_a_second_installation_builds_beside_the_first_which_is_not_rebuilt():
    """Real builds (40-50 s each on a loaded 2-core machine): this installation's (reused when
    it exists), then a faked second venv's, then this one's again, which recompiles nothing."""
    second_name = kernels.extension_name(this_installation(**SECOND_VENV))
    shutil.rmtree(kernels.extensions_dir() / second_name, ignore_errors=True)
    first = load_in_a_process({})
    before = build_outputs(first)
    assert any(name.endswith(".so") for name in before)
    try:
        second = load_in_a_process(SECOND_VENV)
        assert second.name == second_name
        assert second != first and second.parent == first.parent
        assert any(p.suffix == ".so" for p in second.iterdir())
        assert load_in_a_process({}) == first
        assert build_outputs(first) == before  # not one file of the first build rewritten
    finally:
        shutil.rmtree(kernels.extensions_dir() / second_name, ignore_errors=True)
