"""``SegLLMModel.build`` owns the steps that change what it is given (special tokens, grown
embeddings, adapter init, frozen vision tower); ``__init__`` only assembles; loading a
checkpoint gives its weights exactly."""

from __future__ import annotations

import torch
from helpers import DEMO_MODEL, demo_config
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from segllm_ros.model.segllm import WEIGHTS_NAME, SegLLMModel, add_special_tokens, build_llm
from segllm_training.tabletop import TabletopConfig
from segllm_training.trainer.build import demo_tokenizer


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_init_assembles_without_touching_its_inputs():
    cfg = demo_config(freeze_vision_tower=True)
    tokenizer = demo_tokenizer(cfg, TabletopConfig())
    add_special_tokens(tokenizer, cfg)
    llm = build_llm(cfg.llm, tokenizer)
    vision = CLIPVisionModel(CLIPVisionConfig(**cfg.vision))
    before_llm, before_vision, vocab = _state(llm), _state(vision), len(tokenizer)
    model = SegLLMModel(cfg, tokenizer, llm, vision)
    assert len(tokenizer) == vocab
    for name, value in before_llm.items():
        assert torch.equal(model.llm.state_dict()[name], value), name
    for name, value in before_vision.items():
        assert torch.equal(model.vision_tower.state_dict()[name], value), name
    assert all(p.requires_grad for p in model.vision_tower.parameters())  # build freezes
    assert model.seg_token_id == tokenizer.convert_tokens_to_ids(cfg.seg_token)


def test_build_adds_tokens_grows_embeddings_scales_adapters_and_freezes():
    cfg = demo_config(freeze_vision_tower=True, seg_token="<segment>")
    tokenizer = demo_tokenizer(cfg, TabletopConfig())
    vocab = len(tokenizer)
    assert cfg.seg_token not in tokenizer.get_vocab()
    torch.manual_seed(0)
    model = SegLLMModel.build(cfg, tokenizer)
    assert cfg.seg_token in tokenizer.get_vocab() and len(tokenizer) == vocab + 1
    assert model.seg_token_id == vocab
    assert model.llm.get_input_embeddings().num_embeddings == len(tokenizer)
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    token_std = float(model.llm.get_input_embeddings().weight.detach().std())
    # PyTorch's default init would put the adapters' outputs ~20x above the token embeddings
    assert float(model.box_encoder.weight.detach().std()) < 4 * token_std
    assert not model.box_encoder.bias.any()
    torch.manual_seed(0)
    again = SegLLMModel.build(cfg, demo_tokenizer(cfg, TabletopConfig()))
    for name, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name


def test_the_demo_checkpoint_loads_exactly_its_saved_weights():
    model = SegLLMModel.from_pretrained(DEMO_MODEL)
    saved = load_file(str(DEMO_MODEL / WEIGHTS_NAME))
    state = model.state_dict()
    # safetensors stores a tied tensor once: the input embedding is the LM head's weight
    assert set(state) - set(saved) == {"llm.model.embed_tokens.weight"}
    assert torch.equal(state["llm.model.embed_tokens.weight"], saved["llm.lm_head.weight"])
    for name, value in saved.items():
        assert torch.equal(state[name], value), name
    assert not model.training
