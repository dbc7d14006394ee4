"""HIPIE-R50 as SegLLM drives it: the mask decoder of the authors' released checkpoints.

Per frame: ``preprocess`` + ``image_features`` (ResNet-50, cached by the engine). Per round:
``forward`` with the 8 x 768 tokens the LLM emits for a ``<seg>`` in place of HIPIE's BERT text
(tokens 0-3 describe the reference object, 4-7 the target): early image <-> text fusion,
deformable encoder, two-stage query selection, deformable decoder, heads, CondInst masks.
``select_target`` then picks the answer as upstream does.

Submodules sit at upstream's paths (``detr.detr.transformer...``) so the checkpoint loads key
for key; the properties below give them readable names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segllm_ros.model.hipie.backbone import ResNet
from segllm_ros.model.hipie.decoder import inverse_sigmoid
from segllm_ros.model.hipie.heads import MLP, ObjectnessClassifier, TokenClassifier
from segllm_ros.model.hipie.mask_head import (
    MaskFeatureHead,
    dynamic_layer_shapes,
    dynamic_mask_logits,
    num_dynamic_params,
)
from segllm_ros.model.hipie.position import image_pos_embed
from segllm_ros.model.hipie.select import select_target_query
from segllm_ros.model.hipie.transformer import DeformableTransformer
from segllm_ros.model.transforms import resize_longest, to_tensor

NO_OBJECT_LOGIT = -1e4
"""Mask logit of an answer with no target (finite: it is resized and may be half precision)."""


@dataclass
class HipieConfig:
    """Architecture of HIPIE-R50 as the released SegLLM checkpoints use it (the defaults)."""

    image_size: int = 1024  # square input, longest side resized to it then zero-padded
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0..255
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    resnet_blocks: tuple[int, ...] = (3, 4, 6, 3)  # ResNet-50
    resnet_width: int = 64
    d_model: int = 256
    n_heads: int = 8
    d_ffn: int = 2048
    encoder_layers: int = 6
    decoder_layers: int = 6
    n_levels: int = 4  # res3, res4, res5 and one extra stride-64 level
    enc_points: int = 4
    dec_points: int = 4
    num_queries: int = 100  # foreground queries from the two-stage selection
    num_background: int = 10  # learned "stuff" queries (decoded, not answered)
    text_tokens: int = 8  # per <seg>: first half reference, second half target
    text_dim: int = 768
    fusion_dim: int = 2048
    fusion_heads: int = 8
    mask_channels: int = 8  # hidden width of the per-query mask MLP
    mask_layers: int = 3
    nms_iou: float = 0.7
    max_instances: int = 100

    @classmethod
    def tiny(cls) -> HipieConfig:
        """A few-layer, narrow variant with the same structure, for fast tests."""
        return cls(
            image_size=128, resnet_blocks=(1, 1, 1, 1), resnet_width=8, d_model=64, n_heads=8,
            d_ffn=64, encoder_layers=2, decoder_layers=2, num_queries=12, num_background=2,
            text_dim=32, fusion_dim=64, fusion_heads=4,
        )  # fmt: skip


@dataclass
class HipieOutputs:
    """One round's foreground predictions (batch 1 in SegLLM)."""

    logits: Tensor  # (N, Q, T) per text token
    boxes: Tensor  # (N, Q, 4) cx, cy, w, h normalised to the padded square
    iou: Tensor  # (N, Q, 1) predicted box IoU logit
    masks: Tensor  # (N, Q, S/4, S/4) mask logits over the padded square
    memory: Tensor  # (N, sum h*w, C) encoder output (for inspection and parity checks)
    topk: Tensor  # (N, Q) encoder positions the queries were selected from


def _scope(**modules: nn.Module) -> nn.Module:
    """A forward-less container that only reproduces an upstream module path."""
    scope = nn.Module()
    for name, module in modules.items():
        scope.add_module(name, module)
    return scope


class HipieR50(nn.Module):
    """HIPIE-R50 inference (57M parameters). Float32 matches upstream, whose encoder and
    decoder run in fp32; the model also runs cast to bf16/fp16, where near-tied proposals
    may be selected differently."""

    def __init__(self, config: HipieConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or HipieConfig()
        resnet = ResNet(c.resnet_blocks, c.resnet_width)
        in_channels = resnet.out_channels
        input_proj = [
            nn.Sequential(nn.Conv2d(ch, c.d_model, 1), nn.GroupNorm(32, c.d_model))
            for ch in in_channels
        ]
        for i in range(c.n_levels - len(in_channels)):
            ch = in_channels[-1] if i == 0 else c.d_model
            input_proj.append(
                nn.Sequential(
                    nn.Conv2d(ch, c.d_model, 3, stride=2, padding=1), nn.GroupNorm(32, c.d_model)
                )
            )
        # one head per decoder layer, plus the encoder-proposal heads last
        class_embed = nn.ModuleList(
            [TokenClassifier(c.d_model, c.text_dim) for _ in range(c.decoder_layers)]
            + [ObjectnessClassifier(c.d_model)]
        )
        bbox_embed = nn.ModuleList(
            MLP(c.d_model, c.d_model, 4, 3) for _ in range(c.decoder_layers + 1)
        )
        transformer = DeformableTransformer(
            c.d_model, c.n_heads, c.d_ffn, c.encoder_layers, c.decoder_layers, c.n_levels,
            c.enc_points, c.dec_points, c.num_queries, c.num_background, c.text_dim,
            c.fusion_dim, c.fusion_heads, bbox_embed, class_embed,
        )  # fmt: skip
        self.mask_shapes = dynamic_layer_shapes(c.d_model // 32, c.mask_channels, c.mask_layers)
        detector = _scope(
            transformer=transformer,
            class_embed=class_embed,
            bbox_embed=bbox_embed,
            iou_head=nn.ModuleList(nn.Linear(c.d_model, 1) for _ in range(c.decoder_layers)),
            input_proj=nn.ModuleList(input_proj),
            backbone=nn.ModuleList([_scope(backbone=resnet)]),
        )
        self.detr = _scope(
            detr=detector,
            controller=MLP(c.d_model, c.d_model, num_dynamic_params(self.mask_shapes), 3),
            mask_head=MaskFeatureHead(c.d_model),
        )

    @property
    def resnet(self) -> ResNet:
        return self.detr.detr.backbone[0].backbone

    @property
    def transformer(self) -> DeformableTransformer:
        return self.detr.detr.transformer

    def preprocess(self, image: np.ndarray | Tensor) -> tuple[Tensor, tuple[int, int]]:
        """HxWx3 uint8 RGB -> normalised pixels (1, 3, S, S) and the resized image's (h, w)
        inside them: longest side to S (bilinear, antialiased, rounded to uint8 like SAM's
        resize upstream uses), zero-padded bottom/right, then normalised (so the padding
        is -mean/std, as upstream feeds it). Computed in float32, returned in the model's
        dtype."""
        weight = self.resnet.stem.conv1.weight
        size = self.config.image_size
        x = resize_longest(to_tensor(image).to(weight.device), size)
        nh, nw = x.shape[-2:]
        x = F.pad(x[None].round().clamp(0, 255), (0, size - nw, 0, size - nh))
        mean = torch.tensor(self.config.pixel_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config.pixel_std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(weight.dtype), (nh, nw)

    def image_features(self, pixels: Tensor) -> list[Tensor]:
        """(N, 3, S, S) -> ResNet res3, res4, res5 maps: the per-frame part, cached."""
        return self.resnet(pixels)

    def forward(self, features: list[Tensor], text: Tensor) -> HipieOutputs:
        """features: ``image_features`` output; text (N, T, text_dim) LLM tokens."""
        detr, c = self.detr.detr, self.config
        srcs = [proj(f) for proj, f in zip(detr.input_proj, features, strict=False)]
        for proj in detr.input_proj[len(features) :]:
            srcs.append(proj(features[-1] if len(srcs) == len(features) else srcs[-1]))
        pos = [image_pos_embed(*s.shape[-2:], c.d_model // 2, s.device).to(s.dtype) for s in srcs]
        t = self.transformer(srcs, pos, text)

        last = c.decoder_layers - 1
        queries, boxes_in = t.queries[:, c.num_background :], t.boxes[:, c.num_background :]
        logits = detr.class_embed[last](queries, t.text)
        boxes = (detr.bbox_embed[last](queries) + inverse_sigmoid(boxes_in)).sigmoid()
        iou = detr.iou_head[last](queries)

        levels, start = [], 0
        for s in srcs[:3]:  # the stride 8, 16 and 32 levels of the memory, as maps
            n, ch, h, w = s.shape
            levels.append(t.memory[:, start : start + h * w].transpose(1, 2).reshape(n, ch, h, w))
            start += h * w
        mask_feats = self.detr.mask_head(levels)
        # the query's (cx, cy) before the last refinement, in input pixels (SegLLM passes the
        # padded side as HIPIE's image size)
        centres = boxes_in[..., :2] * c.image_size
        masks = dynamic_mask_logits(
            self.detr.controller(queries), self.mask_shapes, centres, mask_feats,
            stride=c.image_size // mask_feats.shape[-1],
        )  # fmt: skip
        return HipieOutputs(logits, boxes, iou, masks, t.memory, t.topk)

    def select_target(self, outputs: HipieOutputs) -> tuple[Tensor, Tensor]:
        """Upstream's answer for batch item 0: (mask logits (1, 1, S/4, S/4), score (1,)).
        When no instance is labelled "target", upstream still shows a (reference) instance
        with score -1; here that answer is an empty mask (the engine reports NOT_FOUND)
        rather than an object the query did not ask for."""
        index, score = select_target_query(
            outputs.logits[0], outputs.boxes[0], outputs.iou[0],
            self.config.nms_iou, self.config.max_instances,
        )  # fmt: skip
        mask = outputs.masks[0, index][None, None]
        if float(score) < 0:
            mask = torch.full_like(mask, NO_OBJECT_LOGIT)
        return mask, score.reshape(1)
