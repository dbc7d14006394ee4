"""A tiny folder laid out like the authors' release, for tests: ``config.json`` with
``model_type: "llava"`` and upstream's keys (tiny sizes), a word-level Llama-style tokenizer
(``<unk>``, ``<s>``, ``</s>``, BOS added, then upstream's 11 added tokens), the weights under
upstream's key names in 3 bf16 safetensors shards + ``model.safetensors.index.json``, with a
few stored-but-unused tensors as the release has (BERT, rotary buffers). The CLIP tower's
config (and, with ``tower_in_weights=False``, its weights) sit in ``clip/``, which the config
names as ``mm_vision_tower``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import CLIPVisionConfig, PreTrainedTokenizerFast

from segllm_ros.model.hipie import HipieConfig
from segllm_ros.model.released.config import ReleasedConfig, tower_architecture
from segllm_ros.model.released.model import TOWER_PREFIX, ReleasedSegLLM
from segllm_ros.model.released.tokens import add_released_tokens

CORPUS = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions.",
    "USER: Segment the person wearing glasses. ASSISTANT: Sure.",
    "USER: Segment his hair next to him, instance 1 2 3 4 5 6 7 8 9 0. ASSISTANT:",
    "Segment the bag that she is carrying, the cup or mug left of the red and blue object "
    "it is holding; the output of round <> [] ?!",
)
TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
}
TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": 28,
    "patch_size": 7,
    "projection_dim": 16,
}
UNUSED = {
    "model.segmentator.hipie.text_encoder.body.embeddings.word_embeddings.weight": (8, 4),
    "model.layers.0.self_attn.rotary_emb.inv_freq": (8,),
}
"""Stored tensors inference never reads (the release has BERT's and old rotary buffers)."""


def base_tokenizer(legacy: bool = True) -> PreTrainedTokenizerFast:
    """Llama-like: spaces become "▁", then BPE (trained here, deterministically, on
    ``CORPUS``); BOS prepended. ``legacy`` (Llama's fast tokenizer as transformers 4.31, the
    authors' version, builds it): every text piece between special tokens gets a leading
    "▁"; else only the text's very start does (Llama's ``legacy=False``). Spacing changes the
    ids, as with Llama's own tokenizer."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if legacy:
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def tiny_tokenizer(legacy: bool = True) -> PreTrainedTokenizerFast:
    """``base_tokenizer`` with upstream's 11 added tokens (as the release saves it)."""
    tokenizer = base_tokenizer(legacy)
    add_released_tokens(tokenizer)
    return tokenizer


def released_config_json(tokenizer, tower: Path) -> dict:
    """A release's config.json at tiny sizes (HIPIE's sizes under our ``segllm_ros`` key)."""
    return {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava",
        **TINY_LLAMA,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": 0,
        "rope_scaling": None,
        "torch_dtype": "bfloat16",
        "mm_vision_tower": str(tower),
        "mm_hidden_size": TINY_CLIP["hidden_size"],
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_bbox_encode": True,
        "mm_use_seg": True,
        "mm_use_gen": True,
        "segmentator": "hipie",
        "segllm_ros": {"hipie": asdict(HipieConfig.tiny())},
    }


def _perturb(model: ReleasedSegLLM, seed: int) -> None:
    """Every tensor moved off its init (norms and zero biases included), deterministically,
    so that no loading slip can hide behind a default value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                scale = 0.02 if tensor.dim() < 2 else 0.1 * float(tensor.std().clamp(min=1e-3))
                tensor.add_(torch.randn(tensor.shape, generator=gen) * scale)


def write_released_folder(
    folder: str | Path, seed: int = 0, tower_in_weights: bool = True, shards: int = 3
) -> Path:
    """Write the tiny release into ``folder``; returns it."""
    folder = Path(folder)
    tower = folder / "clip"
    tower.mkdir(parents=True, exist_ok=True)
    CLIPVisionConfig(**TINY_CLIP).save_pretrained(tower)
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(folder)
    data = released_config_json(tokenizer, tower)
    (folder / "config.json").write_text(json.dumps(data, indent=2))
    assert tower_architecture(str(tower))["hidden_size"] == TINY_CLIP["hidden_size"]

    torch.manual_seed(seed)
    model = ReleasedSegLLM(ReleasedConfig.from_released(data))
    _perturb(model, seed)
    names = model.checkpoint_names()
    own = model.state_dict()
    state = {k: own[v].to(torch.bfloat16).contiguous().clone() for k, v in names.items()}
    gen = torch.Generator().manual_seed(seed + 1)
    state.update({k: torch.randn(shape, generator=gen).bfloat16() for k, shape in UNUSED.items()})
    if not tower_in_weights:
        clip = {
            k[len(TOWER_PREFIX) :]: state.pop(k) for k in list(state) if k.startswith(TOWER_PREFIX)
        }
        save_file(
            {f"vision_model.{k}": v for k, v in clip.items()}, str(tower / "model.safetensors")
        )
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: state[k] for k in part}, str(folder / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder
