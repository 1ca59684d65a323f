"""The C++ DeformConv kernel for the CPU (csrc/deform_conv_cpu.cpp), built once per machine.

Why C++: the tap sampling of a DeformConv is a gather and its backward a scatter, which plain
tensor ops do in many passes (`python -m dogbreeds bench`, docs/performance.md). The kernel
does each direction in one pass. It is compiled with torch's JIT extension builder (g++ and
ninja, ninja from the lock file) the first time a `fused` DeformConv runs, and cached under
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), about 20 s on 2 cores.
The build targets this CPU (``-march=native``), so the cache name carries a fingerprint of
the CPU's feature flags and of the source: a home directory shared between machines never
loads a build made for another CPU, and two checkouts with different kernel sources (a
worktree, a `dvc exp run --temp` copy of another commit) never rebuild over each other.
The build compiles a copy of the source at a path named by that same name (`stable_source`),
not the checkout's own file: ninja rebuilds whenever a build command changes, and the source's
path is in it, so every other checkout path (a `dvc queue` temp copy, a cluster worker's clone,
a test's project) rebuilt the kernel, about 40 s per deformable stage, and checkouts building
at once rebuilt over each other (docs/performance.md, "A stage's fixed cost").

Where no compiler is found, `cpu_kernel_error` says why, and `auto` falls back to `gather`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).parent / "csrc" / "deform_conv_cpu.cpp"

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


def extensions_dir() -> Path:
    """Where torch caches JIT extensions (its default, unless TORCH_EXTENSIONS_DIR is set)."""
    default = Path.home() / ".cache" / "torch_extensions"
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or default)


def stable_source(name: str) -> Path:
    """The kernel's source copied to a path that depends on `name` only, not on the checkout.

    The copy is written once (atomically: checkouts may build at once); a file that exists
    already has the same bytes, since `name` carries the source's fingerprint, and is left as it
    is, so that its mtime does not make ninja rebuild.
    """
    path = extensions_dir() / "dogbreeds-sources" / name / SOURCE.name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SOURCE.name}.{os.getpid()}")
        tmp.write_bytes(SOURCE.read_bytes())
        os.replace(tmp, path)
    return path


@functools.cache
def _build() -> tuple[ModuleType | None, str]:
    try:
        # Importing it warns that no CUDA runtime exists, which is true and beside the point.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils.cpp_extension import load

        _put_ninja_on_path()

        log.info(
            "loading the C++ DeformConv CPU kernel (built on first use on a machine, about 20 s)"
        )
        name = f"dogbreeds_deform_cpu_{cpu_fingerprint()}_{source_fingerprint()}"
        module = load(
            name=name,
            sources=[str(stable_source(name))],  # not SOURCE: see the module docstring
            extra_cflags=["-O3", "-march=native", "-fno-trapping-math", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
        )
        return module, ""
    except Exception as error:  # no compiler, no ninja, a failed build: say why, once
        last_line = (str(error).strip().splitlines() or [""])[-1]  # the compiler's verdict
        reason = f"{type(error).__name__}: {last_line}"
        return None, f"the C++ DeformConv kernel ({SOURCE.name}) could not be built: {reason}"


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
