"""Small real models and data that several tests build (no downloads, no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

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
