"""The C++ DeformConv kernel for the CPU (csrc/deform_conv_cpu.cpp), built once per torch install.

Why C++: the tap sampling of a DeformConv is a gather and its backward a scatter, which plain
tensor ops do in many passes (`python -m dogbreeds bench`, docs/performance.md). The kernel
does each direction in one pass. It is compiled with torch's JIT extension builder (g++ and
ninja, ninja from the lock file) the first time a `fused` DeformConv runs, into a build folder
``$TORCH_EXTENSIONS_DIR/<name>`` (default root: torch's, ``~/.cache/torch_extensions``), about
20 s on 2 cores quiet, 40-50 s loaded.

The name (`extension_name`) is keyed by everything the build compiles and links against, so a
build folder is only ever reused by a process that would write the same `build.ninja`:
- the CPU's feature flags (the build targets this CPU, ``-march=native``): a home directory
  shared between machines never loads a build made for another CPU;
- the kernel's source: checkouts with different kernel sources (a worktree, a `dvc exp run
  --temp` copy of another commit) build apart;
- the torch installation and the Python it runs under (`torch_installation`: torch's include
  and library paths, its version, CUDA/HIP version, git commit and C++ ABI, the Python ABI and
  include path, the compiler and the flags): two virtual environments, each with its own torch,
  build apart. They shared one folder before, whose `build.ninja` holds the torch paths, so
  each switch between them recompiled the kernel over the other's build (issue 34).
One installation reuses its build: same name, same folder, ninja finds it up to date. Two
processes of one installation building at once wait on torch's lock in the build folder.
The build compiles a copy of the source inside its build folder (`stable_source`), not the
checkout's own file: ninja rebuilds whenever a build command changes, and the source's path is
in it, so every other checkout path (a `dvc queue` temp copy, a cluster worker's clone, a
test's project) rebuilt the kernel (docs/performance.md, "A stage's fixed cost").

Where no compiler is found, `cpu_kernel_error` says why, and `auto` falls back to `gather`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).parent / "csrc" / "deform_conv_cpu.cpp"
CFLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fopenmp")
LDFLAGS = ("-fopenmp",)

log = logging.getLogger(__name__)


def cpu_fingerprint() -> str:
    """8 hex digits naming this CPU's instruction set (the flags line of /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:8]


def source_fingerprint() -> str:
    """8 hex digits naming the kernel's source text."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:8]


def torch_installation() -> dict[str, object]:
    """What the build compiles and links against besides the source and the CPU: the torch
    installation (its paths as torch's builder writes them into `build.ninja`), the Python ABI,
    the compiler and the flags. Only public torch names."""
    import torch

    cpp_extension = _cpp_extension()
    return {
        "torch_include": cpp_extension.include_paths(),
        "torch_lib": cpp_extension.library_paths(),
        "torch_version": str(torch.__version__),
        "torch_cuda": torch.version.cuda,
        "torch_hip": torch.version.hip,
        "torch_git": torch.version.git_version,
        "cxx11_abi": torch.compiled_with_cxx11_abi(),
        "python": sys.version,
        "python_abi": sysconfig.get_config_var("EXT_SUFFIX"),
        "python_include": sysconfig.get_paths()["include"],
        "cxx": os.environ.get("CXX", "c++"),  # what torch's builder runs
        "cflags": list(CFLAGS),
        "ldflags": list(LDFLAGS),
    }


def torch_fingerprint(installation: dict[str, object] | None = None) -> str:
    """8 hex digits naming `installation` (default: this process's, `torch_installation`)."""
    installation = torch_installation() if installation is None else installation
    text = json.dumps(installation, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def extension_name(installation: dict[str, object] | None = None) -> str:
    """The extension's (and its build folder's) name: CPU, source and torch fingerprints."""
    return (
        f"dogbreeds_deform_cpu_{cpu_fingerprint()}_{source_fingerprint()}"
        f"_{torch_fingerprint(installation)}"
    )


def extensions_dir() -> Path:
    """Where JIT extensions are built: $TORCH_EXTENSIONS_DIR, else torch's default root."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    default_root = getattr(_cpp_extension(), "get_default_build_root", None)
    if default_root is not None:  # public since torch 2.x; respects XDG_CACHE_HOME
        return Path(default_root())
    return Path.home() / ".cache" / "torch_extensions"


def build_directory(name: str) -> Path:
    """The build folder of the extension `name` (created: torch's build lock lives in it)."""
    path = extensions_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_source(name: str) -> Path:
    """The kernel's source copied into the build folder of `name`, a path that depends on `name`
    only, not on the checkout.

    The copy is written once (atomically: processes may build at once); a file that exists
    already has the same bytes, since `name` carries the source's fingerprint, and is left as it
    is, so that its mtime does not make ninja rebuild.
    """
    path = build_directory(name) / SOURCE.name
    if not path.exists():
        tmp = path.with_name(f".{SOURCE.name}.{os.getpid()}")
        tmp.write_bytes(SOURCE.read_bytes())
        os.replace(tmp, path)
    return path


@functools.cache
def _build() -> tuple[ModuleType | None, str]:
    try:
        _put_ninja_on_path()
        log.info(
            "loading the C++ DeformConv CPU kernel "
            "(built on first use per torch installation, about 20 s)"
        )
        name = extension_name()
        module = _cpp_extension().load(
            name=name,
            sources=[str(stable_source(name))],  # not SOURCE: see the module docstring
            extra_cflags=list(CFLAGS),
            extra_ldflags=list(LDFLAGS),
            build_directory=str(build_directory(name)),
        )
        return module, ""
    except Exception as error:  # no compiler, no ninja, a failed build: say why, once
        last_line = (str(error).strip().splitlines() or [""])[-1]  # the compiler's verdict
        reason = f"{type(error).__name__}: {last_line}"
        return None, f"the C++ DeformConv kernel ({SOURCE.name}) could not be built: {reason}"


def _cpp_extension() -> ModuleType:
    """torch.utils.cpp_extension, imported quietly."""
    # Importing it warns that no CUDA runtime exists, which is true and beside the point.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    return cpp_extension


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the pip package's copy sits in the venv's bin folder,
    which is not on PATH when the venv's python is called by its full path (`make test`)."""
    try:
        import ninja
    except ImportError:
        return  # a system ninja, if any, is already on PATH
    path = os.environ.get("PATH", "")
    if ninja.BIN_DIR not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path])


def cpu_kernel() -> ModuleType:
    """The built kernel module (deform_im2col, deform_col2im); RuntimeError if it cannot build."""
    module, error = _build()
    if module is None:
        raise RuntimeError(f"{error}. Use model.deformable.backend=gather instead.")
    return module


def cpu_kernel_error() -> str:
    """Why the kernel is unavailable, or "" when it builds (building it if needed)."""
    return _build()[1]
