"""LoRA through peft: training moves the adapters, never the LLM's base weights; the frozen
parts (vision tower, SAM image encoder) get no gradient; the exported checkpoint carries the
merged weights and loads as a plain model."""

from __future__ import annotations

import copy

import torch
from train_helpers import tiny_config

from segllm_ros.model.segllm import SegLLMModel
from segllm_training.trainer.batch import collate
from segllm_training.trainer.build import (
    DEFAULT_TRAINABLE,
    TrainableSettings,
    build_model,
    lora_layers,
    setup_trainable,
)
from segllm_training.trainer.data import MixtureSampler, Source
from segllm_training.trainer.loop import source_vocabulary, train
from segllm_training.trainer.losses import LossWeights, forward_batch

FROZEN = ("vision_tower", "sam.image_encoder")


def _lora_config(steps: int):
    cfg = tiny_config(max_steps=steps, checkpoint_every=1000, per_device_batch=4)
    cfg.model.config["freeze_vision_tower"] = True
    cfg.trainable = TrainableSettings(
        llm="lora", token_embeddings=False, modules=list(DEFAULT_TRAINABLE)
    )
    cfg.trainable.lora.dropout = 0.0
    cfg.optim.warmup_steps = 1
    return cfg


def test_frozen_parts_get_no_gradient():
    cfg = _lora_config(1)
    torch.manual_seed(0)
    model = build_model(cfg.model, ["red", "circle"])
    names = setup_trainable(model, cfg.trainable)
    assert any("lora_A" in n for n in names) and any("seg_head" in n for n in names)
    assert not any(n.startswith(FROZEN) for n in names)
    assert not any(n.startswith("llm.") and "lora_" not in n for n in names)
    sampler = MixtureSampler(
        [Source(s) for s in cfg.data.sources], "uniform", 0, cfg.data.sample, 0.5
    )
    loss, _ = forward_batch(model, collate(sampler.next_batch(2), model), LossWeights())
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(FROZEN) or (name.startswith("llm.") and "lora_" not in name):
            assert p.grad is None, name
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in model.named_parameters()
        if "lora_B" in n
    )


def test_lora_training_leaves_base_weights_unchanged(tmp_path):
    cfg = _lora_config(8)
    torch.manual_seed(cfg.seed)
    reference = build_model(cfg.model, source_vocabulary(cfg))  # the run's start (same seed)
    reference_llm = copy.deepcopy(reference.llm.state_dict())
    model = train(cfg, tmp_path, progress=False)
    trained = model.llm.state_dict()
    for name, value in reference_llm.items():
        key = name
        if key not in trained:  # LoRA-wrapped linears keep their weight under base_layer
            key = name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(trained[key], value), name
    moved = [m for m in lora_layers(model) if m.lora_B["default"].weight.abs().sum() > 0]
    assert moved, "LoRA adapters did not train"
    # The export merges the adapters: same keys as a plain model, different q_proj weights.
    exported = SegLLMModel.from_pretrained(tmp_path / "final")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(exported.llm.state_dict()[q], reference_llm[q])
    assert set(exported.state_dict()) == set(reference.state_dict())
