"""CUDA smoke tests: skipped without a GPU (CI has none); run them on a GPU machine."""

from __future__ import annotations

import pytest
import torch
from datagen import tiny_params

from dogbreeds.data import preprocess
from dogbreeds.data.prepared import Split
from dogbreeds.nets.models import MODELS, build_model
from dogbreeds.ops.deform_conv import DeformConv
from dogbreeds.params import Schedule
from dogbreeds.training import devices, loop

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def synthetic_split(n: int, side: int, generator: torch.Generator) -> Split:
    labels = torch.arange(n) % 7
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=generator)
    return Split(images, labels, [str(i) for i in range(n)], [f"b{i}" for i in range(7)])


@pytest.mark.parametrize("backend", ["reference", "gather", "triton", "torchvision"])
def test_deformconv_on_cuda_matches_the_cpu_in_float64(backend):
    torch.manual_seed(0)
    cpu_backend = "gather" if backend == "triton" else backend  # triton has no CPU kernel
    layer = DeformConv(3, 4, backend=cpu_backend).double()
    torch.nn.init.normal_(layer.offset.weight, std=1.0)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    layer_gpu = DeformConv(3, 4, backend=backend).double().to(CUDA)
    layer_gpu.load_state_dict(layer.state_dict())
    x_gpu = x.detach().to(CUDA).requires_grad_()
    y_gpu = layer_gpu(x_gpu)
    y_gpu.sum().backward()
    torch.testing.assert_close(y_gpu.cpu(), y, atol=1e-8, rtol=0)
    torch.testing.assert_close(x_gpu.grad.cpu(), x.grad, atol=1e-8, rtol=0)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("arch", list(MODELS))
def test_one_epoch_per_net_under_cuda_autocast(arch, amp):
    generator = torch.Generator().manual_seed(0)
    train, val = synthetic_split(40, 32, generator), synthetic_split(14, 32, generator)
    normalize = preprocess.Normalize([0.5] * 3, [0.25] * 3, CUDA)
    torch.manual_seed(0)
    model = devices.prepare_model(build_model(arch, width_mult=0.25), CUDA)
    history = loop.train_model(
        model, train.to(CUDA), val.to(CUDA), normalize, Schedule("s", [1], [0.01]),
        tiny_params().train, 0.1, seed=0, dtype=devices.AMP_DTYPES[amp],
    )  # fmt: skip
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0].val_loss))


def test_cnn_repeats_exactly_on_cuda():
    """cuDNN deterministic: two float32 trainings of the cnn give identical weights."""
    devices.configure_device(CUDA)
    generator = torch.Generator().manual_seed(0)
    train, val = synthetic_split(40, 32, generator), synthetic_split(14, 32, generator)
    normalize = preprocess.Normalize([0.5] * 3, [0.25] * 3, CUDA)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = devices.prepare_model(build_model("cnn", width_mult=0.25), CUDA)
        loop.train_model(
            model, train.to(CUDA), val.to(CUDA), normalize, Schedule("s", [2], [0.01]),
            tiny_params().train, 0.1, seed=0,
        )  # fmt: skip
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
