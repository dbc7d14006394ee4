"""Build a SegLLM from the public checkpoints it starts from.

- LLaVA-1.5 in Hugging Face format (``llava-hf/llava-1.5-7b-hf`` layout: ``config.json`` with
  ``text_config``/``vision_config``, safetensors, tokenizer): vision tower, projector, LLM.
- An official SAM checkpoint file (``sam_vit_h_4b8939.pth``: a plain state dict with
  ``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), read with
  ``weights_only=True`` so a file cannot run code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlavaForConditionalGeneration

from segllm_ros.model.config import SamConfig, SegLLMConfig
from segllm_ros.model.segllm import SegLLMModel, architecture_dict

SAM_VARIANTS: dict[str, dict] = {
    "vit_h": {
        "encoder_embed_dim": 1280,
        "encoder_depth": 32,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": [7, 15, 23, 31],
    },
    "vit_l": {
        "encoder_embed_dim": 1024,
        "encoder_depth": 24,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": [5, 11, 17, 23],
    },
    "vit_b": {
        "encoder_embed_dim": 768,
        "encoder_depth": 12,
        "encoder_num_heads": 12,
        "encoder_global_attn_indexes": [2, 5, 8, 11],
    },
}


def sam_config(variant: str) -> SamConfig:
    """The SamConfig of an official SAM release (1024 px input, 256-d prompts)."""
    if variant not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM variant {variant!r}; one of {sorted(SAM_VARIANTS)}")
    return SamConfig(image_encoder="vit", **SAM_VARIANTS[variant])


def load_sam_checkpoint(model: SegLLMModel, path: str | Path) -> None:
    """Load an official SAM state dict into ``model.sam``; every key must match."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a SAM state dict")
    missing, unexpected = model.sam.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit the configured SAM: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def from_llava(
    llava_dir: str | Path,
    sam_checkpoint: str | Path | None = None,
    sam: SamConfig | None = None,
    **overrides,
) -> SegLLMModel:
    """SegLLM initialised from LLaVA-1.5 (vision tower, projector, LLM) and SAM.

    The mask projector starts as a copy of LLaVA's projector: both map CLIP features into
    the LLM's input space. Seg head, box encoder and reference embedding start fresh.
    """
    llava = LlavaForConditionalGeneration.from_pretrained(llava_dir)
    tokenizer = AutoTokenizer.from_pretrained(llava_dir, trust_remote_code=False)
    inner = llava.model
    llm = AutoModelForCausalLM.from_config(llava.config.text_config)
    llm.get_decoder().load_state_dict(inner.language_model.state_dict())
    llm.get_output_embeddings().load_state_dict(llava.lm_head.state_dict())
    config = SegLLMConfig(
        vision=architecture_dict(inner.vision_tower.config),
        vision_feature_layer=llava.config.vision_feature_layer,
        llm={},
        sam=sam or sam_config("vit_h"),
    )
    config = dataclasses.replace(config, **overrides)
    model = SegLLMModel.build(config, tokenizer, llm=llm, vision_tower=inner.vision_tower)
    model.projector.load_state_dict(inner.multi_modal_projector.state_dict())
    model.mask_projector.load_state_dict(inner.multi_modal_projector.state_dict())
    if sam_checkpoint is not None:
        load_sam_checkpoint(model, sam_checkpoint)
    return model
