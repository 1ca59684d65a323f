"""Every private name of torch, MLflow, DVC and CPython the project uses, fenced in one place.

Each shim takes the private path only where the name exists and the installed package is in
the series the lock tests (`TESTED`, the same bounds as pyproject.toml's), and otherwise the
public one: slower or coarser, never wrong. So an upgrade past the lock loses a second of a
stage, not a result, and `tests/test_compat.py` runs every shim both ways.

What each private path buys, and the command that measures it:
- `skip_dynamo_import`, `adam_step_without_dynamo`: torch imports torch._dynamo on the first
  optimiser step, about a second of each train stage (`python -m dogbreeds fixedcost`).
- `mlflow_checks_skipped`: two checks of MLflow's model logging, about a second per model each.
- `exit_now`: the interpreter's teardown of torch's and MLflow's modules, about a second of
  every stage (`fixedcost`, "after last step").
- `per_sample_weights_backward`: one fused op for DeformConv's offset gradient instead of a
  gathered (N, 4, C) product (`python -m dogbreeds bench`).
- `native_cpu_bf16`: torch's own CPUID check; the fallback reads the kernel's CPU flags.
- `repro_planner`, `lockfile_schema`: DVC's own stage graph and lock schema, which `dvc` has no
  public Python API for; without them the cluster command stops with a clear line and the lock
  check falls back to YAML and shape.
- `lockfile_edited`: DVC's own round-trip writer of dvc.lock, so a lock the cluster command
  fills in is laid out as `dvc repro` lays it out; the fallback round-trips it with ruamel.yaml
  (what DVC's writer uses), keys in the same order.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import importlib
import importlib.metadata
import inspect
import io
import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from dogbreeds import DogbreedsError

# The release series the lock pins and the tests ran: the private paths hold there.
TESTED = {"torch": "2.14", "mlflow": "3.17", "dvc": "3.67"}


def tested(package: str) -> bool:
    """Whether the installed `package` is in the series the lock tests (TESTED)."""
    version = installed_version(package)
    return version is not None and version.split("+")[0].startswith(TESTED[package] + ".")


@functools.cache  # asked before every private path a stage takes; it cannot change meanwhile
def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- torch


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX512-BF16)."""
    import torch

    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    avx = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if tested("torch") and amx is not None and avx is not None:
        return bool(amx() or avx())
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere: no bf16 assumed)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def disable_dynamo_wrappers() -> Iterator[Callable]:
    """The functions torch wrapped with `torch._disable_dynamo` in Optimizer, Adam and `adam`
    (directly, or one closure level down as `_disable_dynamo_if_unsupported` does)."""
    import torch

    inner = torch._disable_dynamo(lambda: None).__code__  # the wrapper's code object
    owners = [*vars(torch.optim.Optimizer).values(), *vars(torch.optim.Adam).values()]
    adam = importlib.import_module("torch.optim.adam").adam  # torch.optim deletes the name
    for fn in [*owners, adam]:
        cells = [c.cell_contents for c in getattr(fn, "__closure__", None) or ()]
        for candidate in [fn, *cells]:
            if getattr(candidate, "__code__", None) is inner:
                yield candidate


def skip_dynamo_import() -> int:
    """Let torch's `_disable_dynamo` wrappers of the optimiser call their function directly,
    without importing `torch._dynamo`; returns how many wrappers it set (0: torch's own path).

    Each wrapper looks up `fn.__dynamo_disable` and, when it is missing, imports torch._dynamo
    to make `torch._dynamo.disable(fn)`: a function that runs `fn` outside dynamo's frame
    evaluation, which without torch.compile is a plain call of `fn`. So setting `fn` itself
    there runs the same code. Only while torch._dynamo is not imported: once it is (someone
    compiles), the wrappers keep torch's own behaviour. tests/test_optim.py checks that the
    weights after training steps are bit-identical with and without dynamo.
    """
    import torch

    if "torch._dynamo" in sys.modules or not tested("torch"):
        return 0
    if not hasattr(torch, "_disable_dynamo"):
        return 0
    count = 0
    for wrapper in disable_dynamo_wrappers():
        fn = getattr(wrapper, "__wrapped__", None)
        if fn is not None and getattr(fn, "__dynamo_disable", None) is None:
            setattr(fn, "__dynamo_disable", fn)  # noqa: B010  (the name torch reads, unmangled)
            count += 1
    return count


def adam_step_without_dynamo() -> Callable | None:
    """`Adam.step` without its `_use_grad_for_differentiable` wrapper (which imports
    torch._dynamo for two graph breaks, no-ops outside torch.compile), or None: use the step
    as torch wraps it. The caller sets grad mode as the wrapper would (`optim.EagerAdam`)."""
    import torch

    step = torch.optim.Adam.step
    unwrapped = inspect.unwrap(step)
    if not tested("torch") or unwrapped is step:
        return None
    return unwrapped


def per_sample_weights_backward(
    grad: Any, weight: Any, indices: Any, offsets: Any, offset2bag: Any
) -> Any:
    """d(embedding_bag(mode="sum"))/d(per_sample_weights): for each index i, the dot product of
    its bag's output gradient with `weight[indices[i]]`. The fused op is what embedding_bag's
    own backward uses; the fallback gathers the rows and multiplies (same values, more memory).
    """
    import torch

    fused = getattr(torch.ops.aten, "_embedding_bag_per_sample_weights_backward", None)
    if tested("torch") and fused is not None:
        return fused(grad, weight, indices, offsets, offset2bag, 0)
    return (grad[offset2bag] * weight[indices]).sum(-1)


# ----------------------------------------------------------------------------- MLflow


@contextlib.contextmanager
def mlflow_checks_skipped() -> Iterator[None]:
    """Two checks of MLflow's model logging left out, each about 1 s per model on 2 cores
    (docs/performance.md, "A stage's fixed cost"):

    - that the installed packages satisfy the requirements: `pip_requirements` pins exactly the
      installed versions, read a moment before, so it can only pass; it scans every installed
      distribution's files (`importlib.metadata.packages_distributions`);
    - that the input example serves: MLflow loads the model back and predicts it (pyfunc's
      log_model has no switch for it); tests/test_pyfunc.py loads the logged model and predicts
      its example instead.
    Outside the tested MLflow series, or where a name is gone, that check simply runs.
    """
    patches = []
    if tested("mlflow"):
        import mlflow.models.utils
        import mlflow.utils.environment

        candidates = [
            (mlflow.utils.environment, "warn_dependency_requirement_mismatches"),
            (mlflow.models.utils, "_validate_serving_input"),
        ]
        patches = [(module, name) for module, name in candidates if hasattr(module, name)]
    originals = [getattr(module, name) for module, name in patches]
    for module, name in patches:
        setattr(module, name, lambda *args, **kwargs: None)
    try:
        yield
    finally:
        for (module, name), original in zip(patches, originals, strict=True):
            setattr(module, name, original)


# ----------------------------------------------------------------------------- DVC


def repro_planner() -> tuple[Callable, Callable, Callable]:
    """DVC's (collect_stages, get_active_graph, plan_repro): the stages `dvc repro` would run,
    in its order. DVC has no public Python API for it; the cluster command needs it."""
    try:
        from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro
    except ImportError as exc:
        raise DogbreedsError(
            f"cluster repro needs DVC {TESTED['dvc']}'s stage planner ({exc}): install the lock's "
            "dvc (pip install -r requirements.lock)"
        ) from exc
    return collect_stages, get_active_graph, plan_repro


def lockfile_schema() -> Callable[[Any], Any]:
    """DVC's validator of a dvc.lock's contents, or, where the name is gone, a check of its
    shape only (a mapping with a `stages` mapping), raising ValueError like DVC's raises."""
    try:
        from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    except ImportError:
        return lockfile_shape
    return COMPILED_LOCKFILE_SCHEMA


def lockfile_shape(data: Any) -> Any:
    if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
        raise ValueError("expected a mapping with a 'stages' mapping")
    return data


@contextlib.contextmanager
def lockfile_edited(path: Path) -> Iterator[dict]:
    """dvc.lock's contents (an empty mapping if there is none yet), written back when the block
    ends without raising, laid out as DVC lays it out."""
    try:
        from dvc.utils.serialize import modify_yaml
    except ImportError:
        modify_yaml = ruamel_edited
    with modify_yaml(str(path)) as data:
        yield data


@contextlib.contextmanager
def ruamel_edited(path: str) -> Iterator[dict]:
    """The public fallback of `lockfile_edited`: ruamel.yaml's round trip, as DVC's writer."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    file = Path(path)
    data = (yaml.load(file.read_text(encoding="utf-8")) if file.exists() else None) or {}
    yield data
    with file.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)


# ----------------------------------------------------------------------------- CPython


def exit_now(status: int) -> NoReturn:
    """Exit as the interpreter would, less its teardown of every module.

    What an exit does first still happens, in CPython's order: threading's exit hooks (which
    stop idle `concurrent.futures` workers, such as MLflow's artifact uploads) and the join of
    every non-daemon thread (`threading._shutdown`, the interpreter's own call), then the atexit
    handlers (MLflow's, logging's flush), then stdout and stderr flushed. Then `os._exit` skips
    the garbage collection of torch's and MLflow's modules and their C++ static destructors.

    A file left open for writing would lose its buffer under `os._exit`, so then (and where
    CPython's private names are gone) this exits the ordinary way, which closes it.
    """
    shutdown = getattr(threading, "_shutdown", None)
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_exitfuncs is None:
        sys.exit(status)
    shutdown()
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, a stream closed
            stream.flush()
    if unclosed_writers():  # checked after the exit handlers, which may close some
        sys.exit(status)  # the handlers have run and are cleared: they do not run twice
    os._exit(status)


# Every Python file object is one of io's C file types or a subclass of one (gzip's, zipfile's
# and tempfile's writers hold one too). The scan runs over every object the garbage collector
# tracks (`len(gc.get_objects())` at a stage's end: docs/performance.md), so the per-object test
# stays in C: the file types and their subclasses, as they exist at exit (`type.__subclasses__`),
# make a set, and `itertools.compress` keeps the objects whose type is in it. A Python-level
# test per object (isinstance against the abstract io.IOBase worst of all) is a visible part of
# a stage's exit (`python -m dogbreeds fixedcost`, "after last step"; docs/performance.md).
FILE_TYPES = (io.FileIO, io.BufferedWriter, io.BufferedRandom, io.BufferedRWPair, io.TextIOWrapper)


def file_types() -> set[type]:
    """FILE_TYPES and every subclass of them defined so far."""
    found: set[type] = set()
    todo = list(FILE_TYPES)
    while todo:
        kind = todo.pop()
        if kind not in found:
            found.add(kind)
            todo.extend(kind.__subclasses__())
    return found


def unclosed_writers() -> list[str]:
    """Python file objects still open for writing, other than stdin, stdout and stderr: their
    buffers (and a gzip file's trailer) are written only on close, which `os._exit` would skip.
    A scan of the garbage collector's objects."""
    objects = gc.get_objects()
    is_file = file_types().__contains__
    found = []
    for obj in itertools.compress(objects, map(is_file, map(type, objects))):
        try:
            if obj.closed or not obj.writable() or obj.fileno() in (0, 1, 2):
                continue
        except (ValueError, OSError):  # io.UnsupportedOperation is an OSError
            continue
        found.append(str(getattr(obj, "name", type(obj).__name__)))
    return list(dict.fromkeys(found))  # a text file, its buffer and its raw file: one name
