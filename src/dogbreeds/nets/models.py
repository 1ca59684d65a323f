"""The report's three nets: a simplified MobileNet without depthwise separable convs (CNN),
its depthwise-separable twin (DSC) and its deformable twin (DeformableCNN).

All three share one skeleton of seven 3x3 layers (channels 32-32-64-64-128-128-256; the odd
layers 1, 3, 5, 7 have stride 2), an adaptive average pool, a linear layer and LogSoftmax.
They differ only in what the layers are:

    cnn         conv  conv   conv  conv   conv  conv   conv
    dsc         conv  dsc    dsc   dsc    dsc   dsc    dsc       (the middle six replaced)
    deformable  conv  deform conv  deform conv  deform conv      (every other layer)

At width_mult = 1 the parameter counts are the appendix's 585,383 / 74,663 / 621,725, and the
module tree reproduces its layer-by-layer summary (tests/test_models.py checks both).
Read top-down: the layer blocks first, the nets, then the factory and size helpers.
`python -m dogbreeds summary` prints params and MACs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dogbreeds.ops.deform_conv import DeformConv

CHANNELS = (32, 32, 64, 64, 128, 128, 256)
STRIDES = (2, 1, 2, 1, 2, 1, 2)


def scale_channels(channels: int, width_mult: float) -> int:
    """MobileNet's width multiplier alpha: scale a layer's channels, keeping at least one."""
    return max(1, int(round(channels * width_mult)))


# ----------------------------------------------------------------------------- layer blocks


# Every ReLU is in place, on BatchNorm's output (which nothing else reads): the same values
# and gradients, one activation-sized buffer less to write. In training steps at 64 px, batch
# 32, 2 threads, alternating in-place and not: about 3% faster for the cnn and dsc (two runs).


def conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    """A plain 3x3 conv (padding 1 keeps the side; stride 2 halves it), BatchNorm, ReLU."""
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class DepthWiseConv(nn.Module):
    """One 3x3 filter per input channel (groups = channels), BatchNorm, ReLU."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class PointWiseConv(nn.Module):
    """A 1x1 conv that mixes channels (Cin -> Cout), BatchNorm, ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class DepthSepConv(nn.Module):
    """MobileNet's depthwise separable conv: a depthwise 3x3 then a pointwise 1x1."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.depthwise = DepthWiseConv(cin, stride)
        self.pointwise = PointWiseConv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def deform_bn_relu(cin: int, cout: int, stride: int, backend: str) -> list[nn.Module]:
    """A 3x3 DeformConv (stride 1 only, as in the report), BatchNorm, ReLU."""
    if stride != 1:
        raise ValueError("DeformConv layers sit at the stride-1 positions of the skeleton")
    return [DeformConv(cin, cout, 3, backend=backend), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


# ----------------------------------------------------------------------------- the nets


class DogBreedNet(nn.Module):
    """The shared skeleton: seven layers of the given kinds, avg pool, linear, LogSoftmax."""

    kinds: tuple[str, ...] = ()

    def __init__(self, num_classes: int = 7, width_mult: float = 1.0, deform_backend: str = "auto"):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        cin = 3
        for kind, channels, stride in zip(self.kinds, CHANNELS, STRIDES, strict=True):
            cout = scale_channels(channels, width_mult)
            if kind == "conv":
                layers += conv_bn_relu(cin, cout, stride)
            elif kind == "dsc":
                layers.append(DepthSepConv(cin, cout, stride))
            else:
                layers += deform_bn_relu(cin, cout, stride, deform_backend)
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.log_softmax = nn.LogSoftmax(dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 256*alpha, side/16, side/16)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x).flatten(1)  # (B, 256*alpha)
        return self.log_softmax(self.fc(x))  # (B, num_classes) log-probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class DogBreedClassificationCNN(DogBreedNet):
    """Simplified MobileNet with standard convolutions (585,383 params at alpha = 1)."""

    kinds = ("conv",) * 7


class DogBreedClassificationDSC(DogBreedNet):
    """The CNN with its middle six convs made depthwise separable (74,663 params)."""

    kinds = ("conv",) + ("dsc",) * 6


class DogBreedClassificationDeformableCNN(DogBreedNet):
    """The CNN with DeformConv at layers 2, 4 and 6 (621,725 params)."""

    kinds = ("conv", "deform") * 3 + ("conv",)


MODELS: dict[str, Callable[..., DogBreedNet]] = {
    "cnn": DogBreedClassificationCNN,
    "dsc": DogBreedClassificationDSC,
    "deformable": DogBreedClassificationDeformableCNN,
}


def build_model(
    name: str, num_classes: int = 7, width_mult: float = 1.0, deform_backend: str = "auto"
) -> DogBreedNet:
    """Build a net by name (cnn, dsc, deformable).

    deform_backend: one of deformconv.BACKENDS; "auto" takes, per forward, the backend
    `deformconv.DEFAULT_BACKENDS` names for the input's device. Only the deformable net uses it;
    the state_dict is the same for every backend.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Known: {', '.join(MODELS)}")
    return MODELS[name](
        num_classes=num_classes, width_mult=width_mult, deform_backend=deform_backend
    )


# ----------------------------------------------------------------------------- helpers


def offset_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The DeformConv offset convs' parameters (trained at a reduced lr, see params.yaml)."""
    return [p for m in model.modules() if isinstance(m, DeformConv) for p in m.offset.parameters()]


def count_params(model: nn.Module) -> int:
    """Trainable parameters, as the report's summaries count them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, resolution: int) -> int:
    """Multiply-accumulates of one forward pass on a resolution x resolution image.

    Counted from each layer's output as torch.utils.flop_counter counts them (its FLOPs / 2;
    tests/test_models.py checks that the two agree): an output element of a conv costs one
    MAC per weight of its filter (Cin/groups x kh x kw), of a linear layer one per input. A
    DeformConv counts as a conv with its weights, plus its offset conv; its bilinear sampling
    is not a matmul and so is not counted. Not the counter itself: it imports torch._dynamo,
    about a second of each train stage (`python -m dogbreeds fixedcost`).
    """
    macs = 0

    def count(per_output: int):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            nonlocal macs
            macs += output.numel() * per_output

        return hook

    im2col = {id(m.conv) for m in model.modules() if isinstance(m, DeformConv)}
    hooks = []
    for m in model.modules():
        if isinstance(m, DeformConv):  # whichever backend: the reference's conv may not run
            hooks.append(m.register_forward_hook(count(m.conv.weight[0].numel())))
        elif isinstance(m, nn.Conv2d) and id(m) not in im2col:
            hooks.append(m.register_forward_hook(count(m.weight[0].numel())))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(count(m.in_features)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return macs


def net_size(name: str, width_mult: float, resolution: int) -> tuple[int, int]:
    """(trainable params, MACs of one forward pass) of a net at the given alpha and side."""
    model = build_model(name, width_mult=width_mult, deform_backend="reference")
    return count_params(model), count_macs(model, resolution)
