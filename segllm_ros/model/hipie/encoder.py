"""HIPIE's deformable encoder: early image <-> text fusion, then deformable self-attention
over the four flattened feature levels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segllm_ros.model.hipie.deform_attn import MSDeformAttn
from segllm_ros.model.hipie.fusion import FusionBlock


class EncoderLayer(nn.Module):
    """Deformable self-attention (post-norm) and a ReLU feed-forward block."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self, src: Tensor, pos: Tensor, ref: Tensor, spatial_shapes: Sequence[tuple[int, int]]
    ) -> Tensor:
        src = self.norm1(src + self.self_attn(src + pos, ref, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


def pixel_centres(spatial_shapes: Sequence[tuple[int, int]], device: torch.device) -> Tensor:
    """(S, 2): each flattened position's normalised (x, y) centre, levels one after the other
    (the encoder's reference points and the two-stage anchors' centres; no padding, so no
    valid-ratio rescaling)."""
    refs = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        refs.append(torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2))
    return torch.cat(refs, 0)


class DeformableEncoder(nn.Module):
    """``num_fusion`` fusion blocks (before the first layers) and ``num_layers`` layers.

    ``vl_layers`` keeps upstream's layout: a slot per layer, the fusion block under
    ``b_attn`` in the first ``num_fusion`` slots, empty slots after (they hold no weights).
    """

    def __init__(
        self,
        d_model: int,
        d_ffn: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        num_layers: int,
        text_dim: int,
        fusion_dim: int,
        fusion_heads: int,
        num_fusion: int = 1,
    ) -> None:
        super().__init__()
        self.vl_layers = nn.ModuleList(
            nn.ModuleDict(
                {"b_attn": FusionBlock(d_model, text_dim, fusion_dim, fusion_heads)}
                if i < num_fusion
                else {}
            )
            for i in range(num_layers)
        )
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, d_ffn, n_levels, n_heads, n_points) for _ in range(num_layers)
        )

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        text: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> tuple[Tensor, Tensor]:
        """src, pos (N, S, C) flattened levels; text (N, T, text_dim). Returns the memory
        (N, S, C) and the fused text tokens (N, T, text_dim)."""
        centres = pixel_centres(spatial_shapes, src.device).to(src.dtype)
        ref = centres[None, :, None].expand(1, centres.shape[0], len(spatial_shapes), 2)
        for fusion, layer in zip(self.vl_layers, self.layers, strict=True):
            if "b_attn" in fusion:
                src, text = fusion["b_attn"](src, text)
            src = layer(src, pos, ref, spatial_shapes)
        return src, text
