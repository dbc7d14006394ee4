"""CondInst-style mask head: a shared per-pixel feature map and a tiny per-query MLP
("dynamic convolution") whose weights the query itself predicts.

Upstream runs the per-query 1x1 convolutions as one grouped ``conv2d`` with a batch of
generated kernels. Here they are batched matrix products (the same arithmetic), which ONNX
and TensorRT build without dynamic-weight convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskFeatureHead(nn.Module):
    """Encoder memory levels (strides 8, 16, 32) -> a ``d_model // 32``-channel map at stride 8:
    coarse-to-fine convolutions with nearest upsampling and additive skips."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.lay3 = nn.Conv2d(d_model, d_model, 3, padding=1)
        self.lay4 = nn.Conv2d(d_model, d_model, 3, padding=1)
        self.jia_dcn = nn.Conv2d(d_model, d_model, 3, padding=1)  # a plain conv despite the name
        self.lay1 = nn.Conv2d(d_model, d_model // 4, 3, padding=1)
        self.lay2 = nn.Conv2d(d_model // 4, d_model // 32, 3, padding=1)

    def forward(self, levels: list[Tensor]) -> Tensor:
        """levels: [stride 8, stride 16, stride 32] maps (N, C, h, w)."""
        x = F.relu(self.lay3(levels[2]))
        x = levels[1] + F.interpolate(x, size=levels[1].shape[-2:], mode="nearest")
        x = F.relu(self.lay4(x))
        x = levels[0] + F.interpolate(x, size=levels[0].shape[-2:], mode="nearest")
        x = F.relu(self.jia_dcn(x))
        return F.relu(self.lay2(F.relu(self.lay1(x))))


def aligned_upsample2x(x: Tensor) -> Tensor:
    """CondInst's "aligned bilinear" x2 upsampling of (N, C, h, w): corner-aligned
    interpolation on an edge-padded map, shifted by one output pixel so pixel centres of the
    two grids line up."""
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(2 * h + 1, 2 * w + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, (1, 0, 1, 0), mode="replicate")
    return x[..., : 2 * h, : 2 * w]


def dynamic_layer_shapes(in_channels: int, channels: int, num_layers: int) -> list[tuple[int, int]]:
    """(out, in) of each generated layer: [offset (x, y); features] -> ``channels`` hidden
    units per layer -> one mask logit."""
    dims = [in_channels + 2] + [channels] * (num_layers - 1) + [1]
    return list(zip(dims[1:], dims[:-1], strict=True))


def num_dynamic_params(shapes: list[tuple[int, int]]) -> int:
    """How many numbers the controller predicts per query: all weights, then all biases."""
    return sum(o * i for o, i in shapes) + sum(o for o, _ in shapes)


def dynamic_mask_logits(
    params: Tensor, shapes: list[tuple[int, int]], centres: Tensor, feats: Tensor, stride: int
) -> Tensor:
    """Run each query's generated per-pixel MLP over the mask features.

    params (N, Q, P) from the controller; centres (N, Q, 2) the query's reference (x, y) in
    input pixels; feats (N, C, h, w) at ``stride``. The MLP's input at each pixel is its
    offset from the centre (in input pixels, unnormalised, as upstream trained it) and the
    features there. Returns mask logits (N, Q, 2h, 2w).
    """
    n, q, _ = params.shape
    h, w = feats.shape[-2:]
    chunks = params.split([o * i for o, i in shapes] + [o for o, _ in shapes], dim=-1)
    weights = [c.view(n, q, o, i) for c, (o, i) in zip(chunks, shapes, strict=False)]
    biases = chunks[len(shapes) :]

    ys = torch.arange(h, dtype=feats.dtype, device=feats.device) * stride + stride // 2
    xs = torch.arange(w, dtype=feats.dtype, device=feats.device) * stride + stride // 2
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0).reshape(1, 1, 2, h * w)
    offsets = centres[..., None] - grid  # (N, Q, 2, hw)
    pixels = feats.reshape(n, 1, -1, h * w).expand(n, q, -1, h * w)
    x = torch.cat([offsets, pixels], dim=2)  # (N, Q, 2 + C, hw)
    for k, (wk, bk) in enumerate(zip(weights, biases, strict=True)):
        x = wk @ x + bk[..., None]
        if k < len(weights) - 1:
            x = F.relu(x)
    return aligned_upsample2x(x.view(n, q, h, w))
