"""Bidirectional image <-> text attention: HIPIE's early fusion before the first encoder layer.

Every flattened image position attends to the text tokens and every text token attends to the
image positions, through one shared logit matrix. In SegLLM the "text" is the 8 tokens the
LLM emits per ``<seg>`` (not BERT), so the fused tokens carry image context into the class head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CLAMP = 50000.0
"""Upstream clamps the logits to this range (a guard for fp16); kept so extremes match."""


class BiAttention(nn.Module):
    """Multi-head attention in both directions between image (v) and text (l) sequences."""

    def __init__(self, v_dim: int, l_dim: int, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.v_proj = nn.Linear(v_dim, embed_dim)
        self.l_proj = nn.Linear(l_dim, embed_dim)
        self.values_v_proj = nn.Linear(v_dim, embed_dim)
        self.values_l_proj = nn.Linear(l_dim, embed_dim)
        self.out_v_proj = nn.Linear(embed_dim, v_dim)
        self.out_l_proj = nn.Linear(embed_dim, l_dim)

    def _heads(self, x: Tensor) -> Tensor:
        """(N, S, E) -> (N * heads, S, E / heads)."""
        n, s, _ = x.shape
        return (
            x.view(n, s, self.num_heads, self.head_dim)
            .transpose(1, 2)
            .reshape(n * self.num_heads, s, self.head_dim)
        )

    def _merge(self, x: Tensor, n: int) -> Tensor:
        """(N * heads, S, E / heads) -> (N, S, E)."""
        s = x.shape[1]
        return x.view(n, self.num_heads, s, self.head_dim).transpose(1, 2).reshape(n, s, -1)

    def forward(self, v: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """v (N, S, v_dim), text (N, T, l_dim) -> updates (delta_v, delta_l) of the same shapes."""
        n = v.shape[0]
        q = self._heads(self.v_proj(v) * self.head_dim**-0.5)
        k = self._heads(self.l_proj(text))
        logits = (q @ k.transpose(1, 2)).clamp(-CLAMP, CLAMP)  # (N*h, S, T)
        # image positions read the text (softmax over tokens) and vice versa (over positions)
        image_read = logits.softmax(-1) @ self._heads(self.values_l_proj(text))
        text_read = logits.transpose(1, 2).softmax(-1) @ self._heads(self.values_v_proj(v))
        return self.out_v_proj(self._merge(image_read, n)), self.out_l_proj(
            self._merge(text_read, n)
        )


class FusionBlock(nn.Module):
    """Layer-normalised inputs plus layer-scaled (``gamma``) bidirectional attention updates."""

    def __init__(self, v_dim: int, l_dim: int, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.layer_norm_v = nn.LayerNorm(v_dim)
        self.layer_norm_l = nn.LayerNorm(l_dim)
        self.attn = BiAttention(v_dim, l_dim, embed_dim, num_heads)
        self.gamma_v = nn.Parameter(torch.ones(v_dim))
        self.gamma_l = nn.Parameter(torch.ones(l_dim))

    def forward(self, v: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        v, text = self.layer_norm_v(v), self.layer_norm_l(text)
        delta_v, delta_l = self.attn(v, text)
        return v + self.gamma_v * delta_v, text + self.gamma_l * delta_l
