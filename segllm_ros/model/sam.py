"""SAM (segment-anything) built from its ``modeling`` classes, plus a small CNN image encoder.

``import segment_anything`` runs the package ``__init__``, which imports torchvision; the
PyPI torchvision does not load beside the CPU torch build used here. Only the ``modeling``
subpackage is needed, so the parent package is registered without running its ``__init__``.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from functools import partial

import torch
from torch import nn


def _import_sam_modeling() -> types.ModuleType:
    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError("segment-anything is not installed: pip install segment-anything")
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["segment_anything"] = package
    import segment_anything.modeling as modeling

    return modeling


sam_modeling = _import_sam_modeling()
LayerNorm2d = sam_modeling.common.LayerNorm2d

from segllm_ros.model.config import SamConfig  # noqa: E402

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def sinusoidal_grid(channels: int, size: int) -> torch.Tensor:
    """(1, channels, size, size) 2-D sine/cosine position code (half the channels per axis)."""
    quarter = channels // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter) / max(1, quarter)))
    pos = torch.arange(size, dtype=torch.float32)[:, None] * freqs[None] * (torch.pi / size) * 4
    code = torch.cat([pos.sin(), pos.cos()], dim=1)  # (size, channels / 2)
    grid = torch.zeros(channels, size, size)
    half = code.shape[1]
    grid[:half] = code.T[:, None, :].expand(half, size, size)  # varies along x
    grid[half : 2 * half] = code.T[:, :, None].expand(half, size, size)  # varies along y
    return grid[None]


class ContextBlock(nn.Module):
    """Residual pair of dilated 3x3 convolutions on the embedding grid.

    The strided stem sees 19 px; the demo's objects are up to 36 px, so a triangle's corner
    and a square's corner look alike and "the green triangle" bleeds into the green square.
    The second convolution starts at zero: a new block is the identity, so blocks can be added
    to a trained checkpoint (:func:`segllm_ros.model.segllm.SegLLMModel.grown_from`).
    """

    def __init__(self, channels: int, dilation: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class ConvImageEncoder(nn.Module):
    """Strided CNN: image (B, 3, S, S) -> embedding (B, C, S/patch, S/patch).

    A stand-in for SAM's ViT when training from scratch on a CPU; same output contract.
    Like the ViT it adds a learned absolute position embedding: convolutions are translation
    equivariant, so without it two identical objects get identical embeddings and the mask
    decoder cannot output one of them ("the red circle on the left").
    """

    def __init__(
        self,
        channels: list[int],
        out_chans: int,
        patch_size: int,
        embedding_size: int,
        pos_embed: bool = True,
        context_layers: int = 0,
    ) -> None:
        super().__init__()
        stages = len(channels)
        if 2**stages != patch_size:
            raise ValueError(
                f"{stages} stride-2 stages give patch size {2**stages}, config says {patch_size}"
            )
        layers: list[nn.Module] = []
        in_ch = 3
        for ch in channels:
            layers += [
                nn.Conv2d(in_ch, ch, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(ch, ch, 3, padding=1),
                nn.GELU(),
            ]
            in_ch = ch
        layers += [nn.Conv2d(in_ch, out_chans, 1), LayerNorm2d(out_chans)]
        self.net = nn.Sequential(*layers)
        self.context = nn.Sequential(*(ContextBlock(out_chans) for _ in range(context_layers)))
        self.pos_embed = (
            nn.Parameter(0.5 * sinusoidal_grid(out_chans, embedding_size)) if pos_embed else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.context(self.net(x))
        return x if self.pos_embed is None else x + self.pos_embed


def build_sam(cfg: SamConfig) -> nn.Module:
    """A ``segment_anything.modeling.Sam`` with the sizes of ``cfg``.

    Parameter names match the official checkpoints (``image_encoder.*``,
    ``prompt_encoder.*``, ``mask_decoder.*``) when ``image_encoder == "vit"``.
    """
    if cfg.image_encoder == "vit":
        image_encoder: nn.Module = sam_modeling.ImageEncoderViT(
            depth=cfg.encoder_depth,
            embed_dim=cfg.encoder_embed_dim,
            img_size=cfg.image_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=cfg.encoder_num_heads,
            patch_size=cfg.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(cfg.encoder_global_attn_indexes),
            window_size=cfg.encoder_window_size,
            out_chans=cfg.prompt_embed_dim,
        )
    elif cfg.image_encoder == "cnn":
        image_encoder = ConvImageEncoder(
            cfg.cnn_channels,
            cfg.prompt_embed_dim,
            cfg.patch_size,
            cfg.embedding_size,
            cfg.cnn_pos_embed,
            cfg.cnn_context_layers,
        )
    else:
        raise ValueError(f"unknown SAM image encoder {cfg.image_encoder!r} (vit or cnn)")
    size = cfg.embedding_size
    return sam_modeling.Sam(
        image_encoder=image_encoder,
        prompt_encoder=sam_modeling.PromptEncoder(
            embed_dim=cfg.prompt_embed_dim,
            image_embedding_size=(size, size),
            input_image_size=(cfg.image_size, cfg.image_size),
            mask_in_chans=cfg.mask_in_chans,
        ),
        mask_decoder=sam_modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=sam_modeling.TwoWayTransformer(
                depth=cfg.decoder_depth,
                embedding_dim=cfg.prompt_embed_dim,
                mlp_dim=cfg.decoder_mlp_dim,
                num_heads=cfg.decoder_num_heads,
            ),
            transformer_dim=cfg.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )
