"""Sine position embeddings: of each feature map's pixels (encoder) and of query boxes
(decoder), in the interleaved sin/cos layout of DETR that the trained weights expect."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _sine(x: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """(..., ) positions in radians -> (..., num_feats) [sin f0, cos f1, sin f2, cos f3, ...]
    with frequencies shared in pairs."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = x[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def image_pos_embed(h: int, w: int, num_feats: int, device: torch.device | None = None) -> Tensor:
    """(1, 2 * num_feats, h, w): normalised (y, x) pixel centres. No padding mask: SegLLM pads
    the image itself, so the whole square counts as valid (as upstream sees it)."""
    eps = 1e-6
    ys = (torch.arange(1, h + 1, dtype=torch.float32, device=device) - 0.5) / (h + eps)
    xs = (torch.arange(1, w + 1, dtype=torch.float32, device=device) - 0.5) / (w + eps)
    pos_y = _sine(ys * (2 * math.pi), num_feats)[:, None, :].expand(h, w, num_feats)
    pos_x = _sine(xs * (2 * math.pi), num_feats)[None, :, :].expand(h, w, num_feats)
    return torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)[None]


def box_pos_embed(boxes: Tensor, num_feats: int = 128) -> Tensor:
    """(N, Q, 4) normalised (cx, cy, w, h) -> (N, Q, 4 * num_feats), ordered y, x, w, h."""
    parts = [_sine(boxes[..., i] * (2 * math.pi), num_feats) for i in range(boxes.shape[-1])]
    parts[0], parts[1] = parts[1], parts[0]
    return torch.cat(parts, dim=-1)
