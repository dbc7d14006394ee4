"""ResNet-50 image backbone of HIPIE-R50 (detectron2 layout, frozen batch norm).

Module and parameter names follow detectron2's ``ResNet`` (``stem.conv1``, ``res2.0.conv1``,
``conv1.norm``...) so the released weights load key for key; the network returns the
``res3``-``res5`` maps that HIPIE projects into its deformable encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms, stored as buffers as detectron2
    does (the checkpoint has ``weight``, ``bias``, ``running_mean``, ``running_var``)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class ConvNorm(nn.Conv2d):
    """A bias-free convolution followed by its frozen norm, registered as the conv's child
    ``norm`` (detectron2's ``Conv2d(norm=...)`` naming)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.norm = FrozenBatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (carries the stride) -> 1x1 residual block; a projected shortcut when the
    shape changes."""

    def __init__(self, cin: int, width: int, cout: int, stride: int) -> None:
        super().__init__()
        self.shortcut = ConvNorm(cin, cout, 1, stride=stride) if cin != cout else None
        self.conv1 = ConvNorm(cin, width, 1)
        self.conv2 = ConvNorm(width, width, 3, stride=stride, padding=1)
        self.conv3 = ConvNorm(width, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        y = self.conv3(y)
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(y + skip)


class Stem(nn.Module):
    """7x7 stride-2 convolution and 3x3 stride-2 max pool: the image at 1/4 resolution."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, width, 7, stride=2, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """Bottleneck ResNet; ``forward`` returns the outputs of stages 3-5 (strides 8, 16, 32).

    ``blocks`` is the block count per stage ((3, 4, 6, 3) for ResNet-50); ``width`` the stem
    and first-stage bottleneck width (64). Stage ``i`` has bottleneck width ``width * 2**i``
    and output ``4 * width * 2**i`` channels.
    """

    def __init__(self, blocks: tuple[int, ...] = (3, 4, 6, 3), width: int = 64) -> None:
        super().__init__()
        self.stem = Stem(width)
        cin = width
        self.out_channels: list[int] = []
        for i, n in enumerate(blocks):
            mid, cout = width * 2**i, 4 * width * 2**i
            stage = nn.Sequential(
                *(
                    Bottleneck(cin if j == 0 else cout, mid, cout, 2 if (j == 0 and i > 0) else 1)
                    for j in range(n)
                )
            )
            self.add_module(f"res{i + 2}", stage)
            cin = cout
            self.out_channels.append(cout)
        self.out_channels = self.out_channels[1:]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.res2(self.stem(x))
        res3 = self.res3(x)
        res4 = self.res4(res3)
        return [res3, res4, self.res5(res4)]
