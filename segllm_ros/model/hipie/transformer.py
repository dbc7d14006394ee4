"""HIPIE's deformable transformer: encoder, two-stage query selection, decoder.

Two-stage selection: every encoder position proposes a box (a small box at its pixel, refined
by the box head) and an objectness score; the top ``num_queries`` become the decoder's initial
boxes, paired with learned content queries ("mixed selection"). ``num_background`` learned
queries with learned boxes go first (upstream uses them for "stuff" segments; SegLLM ignores
their outputs, but they attend with the others so they shape the foreground results).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from segllm_ros.model.hipie.decoder import DeformableDecoder
from segllm_ros.model.hipie.encoder import DeformableEncoder, pixel_centres


@dataclass
class TransformerOutputs:
    memory: Tensor  # (N, S, C) encoder output over the flattened levels
    text: Tensor  # (N, T, text_dim) text tokens after the early fusion
    queries: Tensor  # (N, B + Q, C) last decoder layer, background queries first
    boxes: Tensor  # (N, B + Q, 4) boxes fed to the last decoder layer (cx, cy, w, h)
    topk: Tensor  # (N, Q) flattened encoder positions chosen as foreground proposals


class LabelResizer(nn.Module):
    """Linear + LayerNorm from the text width to the model width. Upstream builds it for
    training-time query inputs (it adds 0 x its output at inference); held here only so
    the released state dict loads key for key."""

    def __init__(self, text_dim: int, d_model: int) -> None:
        super().__init__()
        self.fc = nn.Linear(text_dim, d_model)
        self.layer_norm = nn.LayerNorm(d_model, eps=1e-12)


def proposal_boxes(
    spatial_shapes: Sequence[tuple[int, int]], device: torch.device
) -> tuple[Tensor, Tensor]:
    """Per flattened position: the logit of its anchor box (pixel centre, side 0.05 * 2**level)
    (1, S, 4), and whether the box lies inside (0.01, 0.99) (1, S, 1)."""
    centres = pixel_centres(spatial_shapes, device)
    sides = torch.cat(
        [torch.full((h * w, 2), 0.05 * 2.0**level, device=device)
         for level, (h, w) in enumerate(spatial_shapes)]
    )  # fmt: skip
    anchors = torch.cat([centres, sides], -1)[None]
    valid = ((anchors > 0.01) & (anchors < 0.99)).all(-1, keepdim=True)
    return torch.log(anchors / (1 - anchors)), valid


class DeformableTransformer(nn.Module):
    """Encoder + query selection + decoder; sizes named as in Deformable DETR."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ffn: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        n_levels: int,
        enc_n_points: int,
        dec_n_points: int,
        num_queries: int,
        num_background: int,
        text_dim: int,
        fusion_dim: int,
        fusion_heads: int,
        bbox_embed: nn.ModuleList,
        class_embed: nn.ModuleList,
    ) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.level_embed = nn.Parameter(torch.zeros(n_levels, d_model))
        self.tgt_embed = nn.Embedding(num_queries, d_model)
        self.tgt_embed_bg = nn.Embedding(num_background, d_model)
        self.bg_query_refs = nn.Embedding(num_background, 4)
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.resizer = LabelResizer(text_dim, d_model)
        self.encoder = DeformableEncoder(
            d_model, d_ffn, n_levels, n_heads, enc_n_points, num_encoder_layers,
            text_dim, fusion_dim, fusion_heads,
        )  # fmt: skip
        self.decoder = DeformableDecoder(
            d_model, d_ffn, n_levels, n_heads, dec_n_points, num_decoder_layers,
            bbox_embed, class_embed,
        )  # fmt: skip

    def select_queries(
        self, memory: Tensor, spatial_shapes: Sequence[tuple[int, int]]
    ) -> tuple[Tensor, Tensor]:
        """Top-``num_queries`` encoder positions by objectness: (indices (N, Q), boxes
        (N, Q, 4)). Positions whose anchor leaves the image get zero features and an
        infinite box logit, as upstream."""
        anchors, valid = proposal_boxes(spatial_shapes, memory.device)
        anchors = anchors.to(memory.dtype)
        feats = self.enc_output_norm(self.enc_output(memory.masked_fill(~valid, 0.0)))
        objectness = self.decoder.class_embed[-1](feats)[..., 0]
        deltas = self.decoder.bbox_embed[-1](feats)
        box_logits = deltas + anchors.masked_fill(~valid, float("inf"))
        topk = objectness.topk(self.num_queries, dim=1).indices
        boxes = box_logits.gather(1, topk[..., None].expand(-1, -1, 4)).sigmoid()
        return topk, boxes

    def forward(
        self,
        srcs: list[Tensor],
        pos: list[Tensor],
        text: Tensor,
    ) -> TransformerOutputs:
        """srcs, pos: per level (N, C, H, W) projected features and position embeddings;
        text (N, T, text_dim)."""
        spatial_shapes = [(s.shape[-2], s.shape[-1]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        level_pos = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[i] for i, p in enumerate(pos)], 1
        )
        memory, text = self.encoder(src, level_pos, text, spatial_shapes)
        topk, boxes = self.select_queries(memory, spatial_shapes)
        n = memory.shape[0]
        tgt = torch.cat([self.tgt_embed_bg.weight, self.tgt_embed.weight], 0)
        boxes = torch.cat([self.bg_query_refs.weight[None].expand(n, -1, -1), boxes], 1)
        queries, boxes = self.decoder(tgt[None].expand(n, -1, -1), boxes, memory, spatial_shapes)
        return TransformerOutputs(memory, text, queries, boxes, topk)
