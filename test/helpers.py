"""Small real models and data that several tests build (no downloads, no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from segllm_ros.model.config import SegLLMConfig
from segllm_ros.model.segllm import SegLLMModel
from segllm_training.tabletop import TabletopConfig
from segllm_training.trainer.build import demo_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "config" / "demo_model.yaml"
DEMO_MODEL = ROOT / "models" / "demo"


def demo_config(**overrides) -> SegLLMConfig:
    data = yaml.safe_load(DEMO_CONFIG.read_text())["model"]
    data.update(overrides)
    return SegLLMConfig.from_dict(data)


def tiny_model(seed: int = 0, **overrides) -> SegLLMModel:
    """The demo architecture with random weights (seeded)."""
    torch.manual_seed(seed)
    cfg = demo_config(**overrides)
    return SegLLMModel.build(cfg, demo_tokenizer(cfg, TabletopConfig()))


def random_image(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def tiny_llava_folder(path: Path, tokenizer):
    """A tiny LLaVA-1.5 (HF format) saved with ``tokenizer``, for the builder tests."""
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=16,
        ),
        text_config=LlamaConfig(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=len(tokenizer),
            pad_token_id=0,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(1)
    llava = LlavaForConditionalGeneration(cfg)
    llava.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return llava


TINY_VIT_SAM = {
    "image_size": 64,
    "patch_size": 16,
    "encoder_embed_dim": 32,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
    "encoder_window_size": 2,
    "prompt_embed_dim": 32,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_hidden_dim": 32,
    "mask_in_chans": 8,
}
"""An official-layout (ViT) SAM at toy size, for the real-initialisation tests."""
