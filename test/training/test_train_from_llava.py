"""The real initialisation path at toy size: a LLaVA-1.5 HF folder + an official-layout SAM
checkpoint -> LoRA training through the trainer -> an exported checkpoint the engine runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from helpers import TINY_VIT_SAM, tiny_llava_folder, tiny_model
from train_helpers import tiny_config

from segllm_ros.engine.engine import SegLLMEngine
from segllm_ros.engine.history import Frame
from segllm_ros.model.sam import build_sam
from segllm_ros.model.segllm import SegLLMModel
from segllm_training.trainer.build import ModelSource, TrainableSettings
from segllm_training.trainer.loop import read_metrics, train


def test_lora_training_from_llava_and_sam_checkpoints(tmp_path):
    tiny_llava_folder(tmp_path / "llava", tiny_model().tokenizer)
    cfg = tiny_config(max_steps=30, checkpoint_every=1000, per_device_batch=4)
    sam_cfg = dataclasses.replace(tiny_model().config.sam, image_encoder="vit", **TINY_VIT_SAM)
    torch.manual_seed(2)
    torch.save(build_sam(sam_cfg).state_dict(), tmp_path / "sam.pth")
    cfg.model = ModelSource(
        llava=str(tmp_path / "llava"),
        sam_checkpoint=str(tmp_path / "sam.pth"),
        sam=TINY_VIT_SAM,
        overrides={"num_prompt_tokens": 2},
    )
    cfg.trainable = TrainableSettings(llm="lora")
    cfg.optim.warmup_steps = 5
    train(cfg, tmp_path / "run", progress=False)
    losses = np.array([m["loss"] for m in read_metrics(tmp_path / "run")])
    assert losses[-5:].mean() < 0.8 * losses[:5].mean()
    model = SegLLMModel.from_pretrained(tmp_path / "run" / "final")
    assert model.config.sam.encoder_embed_dim == 32 and model.config.freeze_vision_tower
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    result = SegLLMEngine(model).segment("c", "the red circle", Frame.create(image, 1, "f"))
    assert result.mask.shape == (64, 64)
