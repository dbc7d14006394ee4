"""Per-query prediction heads: class logits against the text tokens, box deltas, IoU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CLAMP = 50000.0
"""Upstream clamps the class logits to this range (an fp16 guard); kept so extremes match."""


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims, [*dims[1:], out_dim], strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class TokenClassifier(nn.Module):
    """Grounding head: one logit per (query, text token), a scaled dot product of the query
    with the L2-normalised, projected token plus a per-token bias (GLIP-style). With SegLLM's
    8 tokens, tokens 0-3 score "reference" and 4-7 "target"."""

    def __init__(self, d_model: int, text_dim: int) -> None:
        super().__init__()
        self.dot_product_projection_text = nn.Linear(text_dim, d_model)
        self.log_scale = nn.Parameter(torch.zeros(1))
        self.bias_lang = nn.Parameter(torch.zeros(text_dim))
        self.bias0 = nn.Parameter(torch.zeros(1))

    def forward(self, queries: Tensor, text: Tensor) -> Tensor:
        """queries (N, Q, C), text (N, T, text_dim) -> logits (N, Q, T)."""
        text = F.normalize(text, p=2, dim=-1)
        tokens = self.dot_product_projection_text(text / 2.0)
        token_bias = text @ self.bias_lang + self.bias0  # (N, T)
        logits = queries @ tokens.transpose(-1, -2) / self.log_scale.exp() + token_bias[:, None]
        return logits.clamp(-CLAMP, CLAMP)


class ObjectnessClassifier(nn.Module):
    """Text-free objectness logit: ranks encoder positions for the two-stage query selection."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.body = nn.Linear(d_model, 1)

    def forward(self, queries: Tensor) -> Tensor:
        return self.body(queries)
