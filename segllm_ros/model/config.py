"""Configuration of a SegLLM model: one dataclass per component, saved as ``config.json``.

Every size lives here so the same code builds the 1 MB demo model and the real
LLaVA-1.5-7B + SAM ViT-H model; every deviation from the upstream recipe is a switch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from segllm_ros.model.family import DEFAULT_FAMILY


@dataclass
class SamConfig:
    """SAM mask decoder and its image encoder.

    ``image_encoder="vit"`` is segment-anything's ``ImageEncoderViT`` (real checkpoints);
    ``"cnn"`` is a small strided CNN that trains far faster from scratch on a CPU (demo model).
    """

    image_encoder: str = "vit"
    image_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 1280
    encoder_depth: int = 32
    encoder_num_heads: int = 16
    encoder_global_attn_indexes: list[int] = field(default_factory=lambda: [7, 15, 23, 31])
    encoder_window_size: int = 14
    cnn_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    cnn_pos_embed: bool = False  # learned absolute position embedding on the CNN output, as the
    # ViT has; needed to tell identical objects apart by where they are (demo model: on)
    cnn_context_layers: int = 0  # residual dilated-conv blocks on the CNN output: each widens
    # the receptive field by 32 px so a position sees the whole object's shape (demo model: 2)
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class SegLLMConfig:
    """The whole model. ``vision`` and ``llm`` are Hugging Face config dicts.

    ``llm`` holds either the kwargs of a config (``model_type`` selects the class) or
    ``{"pretrained": path, "gguf_file": ...}`` to load a causal LM from disk.
    """

    # Model family (``segllm_ros.model.family.FAMILIES``): which code builds and loads it;
    # checkpoints saved before families existed have no key and are this one.
    family: str = DEFAULT_FAMILY
    vision: dict[str, Any] = field(default_factory=dict)
    vision_feature_layer: int = -2
    llm: dict[str, Any] = field(default_factory=dict)
    sam: SamConfig = field(default_factory=SamConfig)
    # Seg head: prompt tokens per slot (target, and reference for mask-aware decoding).
    num_prompt_tokens: int = 1
    # Instance slots per answer (issue 17): SAM's mask tokens, up to 4, each decoded into one
    # object of the answer in reading order (left to right) with its predicted IoU as a
    # presence score, plus a head that reads whether the query is plural. 1 = one mask per
    # answer, the upstream design.
    max_segments: int = 1
    mask_aware_decoding: bool = True
    # Reference tokens (mask + box of an earlier output) in the LLM input, upstream scheme:
    # dropped with p in training, scaled by (1 - p) at inference.
    reference_token_dropout: float = 0.5
    # Project addition: earlier masks also go to SAM as a dense prompt with a learned
    # "reference" embedding (64 parameters at prompt_embed_dim=64).
    dense_reference_prompt: bool = True
    # Project addition for small LLMs trained from scratch: the seg head reads the <seg> state
    # plus the (layer-normed) mean input embedding of the current turn's query and reference
    # tokens. A freshly initialised LLM carries the query into later positions too weakly for
    # the mask decoder to pick up, and the two then settle on "every object"; a pretrained LLM
    # does not need it (upstream: off).
    seg_turn_pooling: bool = False
    freeze_vision_tower: bool = True
    # Conversation text (Vicuna v1).
    system_prompt: str = (
        "A chat between a curious user and an artificial intelligence assistant. The "
        "assistant gives helpful, detailed, and polite answers to the user's questions."
    )
    seg_answer: str = "Sure, it is <seg>."
    image_token: str = "<image>"
    seg_token: str = "<seg>"
    ref_token: str = "<ref>"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegLLMConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SegLLMConfig keys: {sorted(unknown)}")
        data = dict(data)
        sam = data.pop("sam", {}) or {}
        sam_known = {f.name for f in fields(SamConfig)}
        bad = set(sam) - sam_known
        if bad:
            raise ValueError(f"unknown SamConfig keys: {sorted(bad)}")
        return cls(sam=SamConfig(**sam), **data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SegLLMConfig:
        """Read a JSON (``config.json``) or YAML experiment file."""
        text = Path(path).read_text()
        data = yaml.safe_load(text) if str(path).endswith((".yaml", ".yml")) else json.loads(text)
        return cls.from_dict(data)
