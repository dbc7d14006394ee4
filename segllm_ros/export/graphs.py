"""The exported graphs: thin ``nn.Module`` wrappers over the model's graph methods (one
each), with example inputs and dynamic axes. Preprocessing (resizes, crops) stays outside
them, in torch code that every runtime shares (``segllm_ros.model.processing``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from segllm_ros.model.segllm import SegLLMModel


@dataclass
class GraphDef:
    """One graph to export: the module, example inputs, names and dynamic axes."""

    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]


class _Call(nn.Module):
    """Exports one method of the model (the model is shared, not copied)."""

    def __init__(self, model: SegLLMModel, fn) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args: torch.Tensor):
        return self.fn(*args)


def kv_names(num_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


class LLMWithPast(nn.Module):
    """The LLM decoder on flat tensors: new input embeddings + past keys/values of every layer
    -> last hidden states + present keys/values, so a round feeds only its new tokens."""

    def __init__(self, model: SegLLMModel) -> None:
        super().__init__()
        self.model = model
        self.num_layers = model.llm.config.num_hidden_layers

    def forward(self, inputs_embeds: torch.Tensor, *past: torch.Tensor):
        cache = DynamicCache()
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        hidden = self.model.llm_hidden(inputs_embeds, past_key_values=cache).last_hidden_state
        present = [t for layer in cache.layers for t in (layer.keys, layer.values)]
        return (hidden, *present)


def llm_dims(model: SegLLMModel) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of the LLM's cache."""
    cfg = model.llm.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers, heads, head_dim


def graph_defs(model: SegLLMModel) -> dict[str, GraphDef]:
    """Every graph of a deployment, keyed as ``manifest.GRAPHS``."""
    dtype = model.dtype
    clip = model.vision_tower.config.image_size
    sam = model.config.sam
    hidden = model.llm.get_input_embeddings().embedding_dim
    layers, heads, head_dim = llm_dims(model)
    past, seq = 3, 5  # example sizes; both axes are dynamic
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dtype)

    past_names, present_names = kv_names(layers, "past"), kv_names(layers, "present")
    return {
        "vision": GraphDef(
            _Call(model, model.vision_tokens),
            (rand(1, 3, clip, clip),),
            ["pixels"],
            ["image_tokens"],
            {},
        ),
        "mask_encoder": GraphDef(
            _Call(model, model.encode_references),
            (rand(2, 3, clip, clip), torch.rand(2, 4, generator=g).to(dtype)),
            ["crops", "boxes"],
            ["ref_tokens"],
            {"crops": {0: "refs"}, "boxes": {0: "refs"}, "ref_tokens": {0: "refs"}},
        ),
        "sam_encoder": GraphDef(
            _Call(model, model.sam_encoder),
            (rand(1, 3, sam.image_size, sam.image_size),),
            ["pixels"],
            ["sam_embedding"],
            {},
        ),
        "token_embed": GraphDef(
            _Call(model, model.token_embeddings),
            (torch.zeros(1, seq, dtype=torch.long),),
            ["input_ids"],
            ["embeds"],
            {"input_ids": {1: "seq"}, "embeds": {1: "seq"}},
        ),
        "llm": GraphDef(
            LLMWithPast(model),
            (rand(1, seq, hidden) * 0.02, *[rand(1, heads, past, head_dim) for _ in past_names]),
            ["inputs_embeds", *past_names],
            ["hidden", *present_names],
            {
                "inputs_embeds": {1: "seq"},
                "hidden": {1: "seq"},
                **{n: {2: "past"} for n in past_names},
                **{n: {2: "total"} for n in present_names},
            },
        ),
        "lm_head": GraphDef(
            _Call(model, model.lm_head), (rand(1, hidden),), ["hidden"], ["logits"], {}
        ),
        "mask_decoder": GraphDef(
            _Call(model, model.decode_from_seg),
            (
                rand(1, sam.prompt_embed_dim, sam.embedding_size, sam.embedding_size),
                rand(1, hidden),
                rand(1, hidden),
                (torch.rand(1, sam.image_size, sam.image_size, generator=g) > 0.5).to(dtype),
            ),
            ["sam_embedding", "seg_hidden", "turn_embeds", "ref_mask"],
            ["low_res_logits", "iou", "plural"],
            {},
        ),
    }
