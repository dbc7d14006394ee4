"""Multi-scale deformable attention (Deformable DETR) with a pure-PyTorch sampling core.

Upstream runs the sampling in a custom CUDA op. Here it is ``F.grid_sample`` (bilinear, zero
padding, ``align_corners=False``), which computes the same values on any device and exports
to ONNX (``GridSample``, opset >= 16) and TensorRT.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_core(
    value: Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted bilinear samples of each level's value map.

    value (N, S, M, D) for M heads over the flattened levels ``spatial_shapes`` (H, W);
    sampling_locations (N, Q, M, L, P, 2) as (x, y) in [0, 1]; attention_weights
    (N, Q, M, L, P). Returns (N, Q, M * D).
    """
    n, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    sampled, start = [], 0
    for level, (h, w) in enumerate(spatial_shapes):
        v = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(n * heads, dim, h, w)
        g = grids[:, :, :, level].transpose(1, 2).reshape(n * heads, queries, points, 2)
        # (N*M, D, Q, P)
        sampled.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
        start += h * w
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, queries, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N*M, D, Q)
    return out.view(n, heads * dim, queries).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Each query attends to ``n_points`` learned offsets around its reference point on each
    of ``n_levels`` maps, per head; offsets and weights are linear in the query."""

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> Tensor:
        """query (N, Q, C); reference_points (N, Q, L, 2) as (x, y) or (N, Q, L, 4) as boxes
        (cx, cy, w, h), both normalised; value (N, S, C) flattened levels."""
        n, q, _ = query.shape
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        v = self.value_proj(value).view(n, value.shape[1], heads, -1)
        offsets = self.sampling_offsets(query).view(n, q, heads, levels, points, 2)
        weights = self.attention_weights(query).view(n, q, heads, levels * points)
        weights = weights.softmax(-1).view(n, q, heads, levels, points)
        ref = reference_points[:, :, None, :, None]
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalise by its (W, H)
            wh = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype)
            locations = ref + offsets / wh.to(query.device)[None, None, None, :, None, :]
        else:
            # offsets are in units of the box: scaled by half its size per point count
            locations = ref[..., :2] + offsets / points * ref[..., 2:] * 0.5
        return self.output_proj(ms_deform_attn_core(v, spatial_shapes, locations, weights))
