"""HIPIE's deformable decoder with iterative box refinement (Deformable DETR / DINO style).

Each layer: self-attention among the queries, deformable cross-attention into the encoder
memory around the query's current box, a feed-forward block; then the box head refines the
box. Query positions come from the boxes themselves (sine embedding -> MLP), not from learned
embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from segllm_ros.model.hipie.deform_attn import MSDeformAttn
from segllm_ros.model.hipie.heads import MLP
from segllm_ros.model.hipie.position import box_pos_embed


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x) with x clamped to [0, 1] and both sides floored at ``eps`` (upstream's)."""
    x = x.clamp(0, 1)
    return (x.clamp(min=eps) / (1 - x).clamp(min=eps)).log()


class DecoderLayer(nn.Module):
    """Self-attention, deformable cross-attention, feed-forward; each post-norm."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        boxes: Tensor,
        memory: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> Tensor:
        q = (tgt + query_pos).transpose(0, 1)  # nn.MultiheadAttention is sequence-first
        attended = self.self_attn(q, q, tgt.transpose(0, 1), need_weights=False)[0]
        tgt = self.norm2(tgt + attended.transpose(0, 1))
        ref = boxes[:, :, None].expand(-1, -1, len(spatial_shapes), -1)
        tgt = self.norm1(tgt + self.cross_attn(tgt + query_pos, ref, memory, spatial_shapes))
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class DeformableDecoder(nn.Module):
    """``num_layers`` layers with box refinement after each.

    ``bbox_embed`` and ``class_embed`` are the detector's head lists, shared (upstream
    registers them here too, so the state dict holds both names for one tensor). Entries
    0..num_layers-1 refine and classify per layer; the last entry scores the encoder's
    proposals for the two-stage query selection.
    """

    def __init__(
        self,
        d_model: int,
        d_ffn: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        num_layers: int,
        bbox_embed: nn.ModuleList,
        class_embed: nn.ModuleList,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, d_ffn, n_levels, n_heads, n_points) for _ in range(num_layers)
        )
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.bbox_embed = bbox_embed
        self.class_embed = class_embed

    def forward(
        self,
        tgt: Tensor,
        boxes: Tensor,
        memory: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> tuple[Tensor, Tensor]:
        """tgt (N, Q, C) query contents, boxes (N, Q, 4) initial (cx, cy, w, h).

        Returns the last layer's queries and the boxes that layer was given: the heads add
        their deltas to the latter, and the mask head centres its coordinates on them.
        """
        for i, layer in enumerate(self.layers):
            query_pos = self.ref_point_head(box_pos_embed(boxes, memory.shape[-1] // 2))
            tgt = layer(tgt, query_pos, boxes, memory, spatial_shapes)
            if i < len(self.layers) - 1:
                boxes = (self.bbox_embed[i](tgt) + inverse_sigmoid(boxes)).sigmoid()
        return tgt, boxes
