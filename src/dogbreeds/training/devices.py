"""Device and precision: where a run trains, in which dtype, and what it ran on.

`resolve_device` and `resolve_amp` turn params (train.device, train.amp) into a torch device and
an autocast dtype; `configure_device` sets the process-wide knobs; `runtime` records what the
results depend on (device, torch, threads, precision) for the metrics JSON and MLflow.
"""

from __future__ import annotations

import ctypes
import platform

import torch
from torch import nn

from dogbreeds import DogbreedsError
from dogbreeds.compat import native_cpu_bf16


class TrainingError(DogbreedsError):
    """A setting training cannot honour (e.g. CUDA asked for but absent); the message names it."""


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# On a CPU with native bf16 (AMX or AVX512-BF16), the nets for which bf16 autocast trained
# faster than float32 (`python -m dogbreeds bench`; docs/performance.md). dsc is slower in bf16:
# its depthwise convs. Elsewhere `auto` is float32.
CPU_AUTO_AMP = {"cnn": "bf16", "dsc": "off", "deformable": "bf16"}


def resolve_amp(amp: str, device: torch.device, arch: str) -> str:
    """params train.amp -> the precision a run uses: off, bf16 or fp16.

    auto: on CUDA, bf16 where the GPU has it natively (not emulated), else fp16 with a
    GradScaler; on a CPU, bf16 for the nets where the benchmark found it faster, on CPUs that
    have bf16 in hardware; float32 everywhere else.
    """
    if amp != "auto":
        native = device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False)
        if amp == "bf16" and not native:  # asks CUDA only for a CUDA run
            raise TrainingError("params: 'train.amp' is bf16, but this GPU has no native bf16")
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return CPU_AUTO_AMP.get(arch, "off") if native_cpu_bf16() else "off"


def resolve_device(name: str) -> torch.device:
    """params train.device: auto (CUDA when available), cpu or cuda."""
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("params: 'train.device' is cuda, but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def configure_device(device: torch.device) -> None:
    """Process-wide settings for training on `device`.

    CUDA: TF32 matmuls where float32 remains ("high"), and cuDNN in deterministic mode without
    autotuning, so the cnn and dsc nets repeat exactly (the deformable net's backward adds
    with atomics, so it does not; docs/performance.md).
    """
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    keep_freed_memory()


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed buffers for reuse instead of returning them to the OS.

    By default glibc serves every buffer over 32 MB (and, once the threshold adapts, smaller
    ones) with a fresh mmap and unmaps it on free, so each training step faults in its large
    activations page by page again; the DeformConv columns are such buffers (`python -m
    dogbreeds bench` measures the difference, docs/performance.md). It is what PyTorch's CPU
    tuning guide gets from jemalloc or tcmalloc, without a preload. Peak memory is unchanged;
    freed memory stays with the process until it exits.
    Returns whether the settings took (False off glibc, e.g. macOS).
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 1 << 31))


def runtime(device: torch.device, amp: str, deform_backend: str | None) -> dict[str, str]:
    """What a run ran on, for the metrics JSON and MLflow: results differ across these."""
    info = {
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        ),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "amp": amp,
        "threads": str(torch.get_num_threads()),
    }
    if deform_backend is not None:
        info["deform_backend"] = deform_backend
    return info


MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def prepare_model(
    model: nn.Module, device: torch.device, memory_format: str = "channels_last"
) -> nn.Module:
    """The net on `device`, its weights in `memory_format`.

    The weights' layout decides the whole net's: a conv with channels_last weights runs in
    channels_last whatever its input's layout (bit for bit the same result), so inputs need no
    conversion. channels_last is what trains fastest in whole training steps on the CPUs
    measured, at 64 and 224 px, although contiguous wins some layers' passes in isolation
    (`python -m dogbreeds bench --memory-format channels_last contiguous` and `bench --profile`;
    docs/performance.md). bench's flag is the only caller that asks for contiguous.
    """
    return model.to(device=device, memory_format=MEMORY_FORMATS[memory_format])
