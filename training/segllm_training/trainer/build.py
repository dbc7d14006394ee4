"""Build the model a training run starts from, and decide which of its weights train.

Three starts: a model config (random weights: tests, the tabletop models, the GPU check;
optionally grown from an earlier stage's checkpoint), the real initialisation (LLaVA-1.5 HF
folder + official SAM checkpoint) or a project checkpoint. LoRA goes into the LLM through
``peft``; exporting merges it into plain weights, so a trained run is an ordinary project
checkpoint the engine loads.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from segllm_ros.model.builders import from_llava, sam_config
from segllm_ros.model.config import SegLLMConfig
from segllm_ros.model.segllm import SegLLMModel
from segllm_ros.model.tokenizer import WORD_PATTERN, build_word_tokenizer
from segllm_training.tabletop import TabletopConfig
from segllm_training.tabletop import vocabulary as tabletop_vocabulary
from segllm_training.trainer.merge import merged

# What the real recipe trains besides the LLM (LISA/SegLLM): everything new plus SAM's decoder.
DEFAULT_TRAINABLE = (
    "projector",
    "mask_projector",
    "box_encoder",
    "seg_head",
    "sam.mask_decoder",
    "sam.prompt_encoder",
    "reference_embed",
    "turn_norm",
    "plural_head",
)
LLM_MODES = ("lora", "full", "frozen")


@dataclass
class ModelSource:
    """Where the weights come from (exactly one of ``config``/``config_file``/``llava``/
    ``checkpoint``).

    ``config``: a SegLLMConfig dict (random init; a tabletop word tokenizer is built for it).
    ``config_file``: the same, read from the ``model:`` section of a YAML file (relative paths
    are resolved against the experiment file), so stages of one recipe share one architecture.
    ``grow_from`` (with ``config``/``config_file``): start from this checkpoint instead of
    random weights; the config may add CNN context blocks, which start as the identity
    (:meth:`SegLLMModel.grown_from`), and must otherwise match it.
    ``llava`` + ``sam_checkpoint``: the real initialisation; ``overrides`` sets SegLLMConfig
    switches on top of it (or of ``config``, merged into its nested sections).
    """

    config: dict | None = None
    config_file: str | None = None
    grow_from: str | None = None
    llava: str | None = None
    sam_checkpoint: str | None = None
    sam_variant: str = "vit_h"
    sam: dict | None = None  # SamConfig fields over the variant's (other SAM sizes)
    checkpoint: str | None = None
    overrides: dict = field(default_factory=dict)


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # LISA: the attention projections of the LLM.
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class TrainableSettings:
    llm: str = "lora"  # lora | full | frozen
    lora: LoraSettings = field(default_factory=LoraSettings)
    # The new tokens (<seg>, <ref>, ...) need their embedding rows and LM-head rows trained
    # (LISA trains embed_tokens and lm_head whole).
    token_embeddings: bool = True
    modules: list[str] = field(default_factory=lambda: list(DEFAULT_TRAINABLE))


def word_tokenizer(model_cfg: SegLLMConfig, words: Iterable[str]):
    """Closed vocabulary for models trained from scratch: ``words`` (e.g. the tabletop
    queries), the LISA conversion's "the mask" and the conversation template."""
    template = f"{model_cfg.system_prompt} USER: ASSISTANT: {model_cfg.seg_answer} the mask"
    every = [*words, *re.findall(WORD_PATTERN, template)]
    return build_word_tokenizer(w for w in every if w != model_cfg.seg_token)


def demo_tokenizer(model_cfg: SegLLMConfig, tabletop_cfg: TabletopConfig):
    """The word tokenizer of a model trained on tabletop conversations only (the demo)."""
    return word_tokenizer(model_cfg, tabletop_vocabulary(tabletop_cfg))


def model_config(src: ModelSource) -> SegLLMConfig:
    """The SegLLMConfig of a ``config``/``config_file`` source, overrides applied."""
    data = src.config
    if src.config_file:
        data = yaml.safe_load(Path(src.config_file).read_text())["model"]
    return SegLLMConfig.from_dict(merged(data, src.overrides))


def build_model(src: ModelSource, vocabulary: Iterable[str] = ()) -> SegLLMModel:
    """The starting model, in training mode, fp32 (precision is the trainer's business);
    ``vocabulary`` feeds the word tokenizer of a model built from a config."""
    chosen = [k for k in ("config", "config_file", "llava", "checkpoint") if getattr(src, k)]
    if len(chosen) != 1:
        raise ValueError(
            f"model source needs exactly one of config/config_file/llava/checkpoint, got {chosen}"
        )
    if src.grow_from and chosen[0] not in ("config", "config_file"):
        raise ValueError("grow_from needs the grown model's config (config or config_file)")
    if src.checkpoint:
        model = SegLLMModel.from_pretrained(src.checkpoint)
        if src.overrides:
            model.config = dataclasses.replace(model.config, **src.overrides)
    elif src.llava:
        sam = dataclasses.replace(sam_config(src.sam_variant), **(src.sam or {}))
        model = from_llava(src.llava, src.sam_checkpoint, sam, **src.overrides)
    elif src.grow_from:
        model = SegLLMModel.grown_from(src.grow_from, model_config(src), vocabulary)
    else:
        cfg = model_config(src)
        model = SegLLMModel.build(cfg, word_tokenizer(cfg, vocabulary))
    return model.train()


def _matches(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def setup_trainable(model: SegLLMModel, cfg: TrainableSettings) -> list[str]:
    """Freeze everything, then open what ``cfg`` trains; LoRA adapters go into the LLM.
    Returns the names of the trainable parameters. The vision tower stays frozen while the
    model config says so, whatever ``modules`` lists."""
    if cfg.llm not in LLM_MODES:
        raise ValueError(f"llm must be one of {LLM_MODES}, got {cfg.llm!r}")
    model.requires_grad_(False)
    if cfg.llm == "lora":
        lora = LoraConfig(
            r=cfg.lora.rank,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.targets,
        )
        inject_adapter_in_model(lora, model.llm)
    prefixes = list(cfg.modules)
    if cfg.llm == "full":
        prefixes.append("llm")
    for name, param in model.named_parameters():
        if "lora_" in name or _matches(name, prefixes):
            param.requires_grad_(True)
    if cfg.token_embeddings and cfg.llm != "frozen":
        model.llm.get_input_embeddings().weight.requires_grad_(True)
        model.llm.get_output_embeddings().weight.requires_grad_(True)
    if model.config.freeze_vision_tower:
        model.vision_tower.requires_grad_(False)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def enable_checkpointing(llm: nn.Module) -> None:
    """Activation checkpointing in the LLM's layers (non-reentrant: gradients reach LoRA
    weights even where the layer input needs none). transformers >= 5.2x renamed it."""
    kwargs = {"use_reentrant": False}
    if hasattr(llm, "activation_checkpointing_enable"):
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def lora_layers(model: nn.Module) -> list[LoraLayer]:
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


@contextlib.contextmanager
def plain_view(model: SegLLMModel) -> Iterator[SegLLMModel]:
    """The model with each LoRA layer replaced by a copy of its base layer holding the merged
    weight, for saving as an ordinary checkpoint. The training weights are not touched
    (merging in place and unmerging again would perturb them by rounding)."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    with torch.no_grad():
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, LoraLayer):
                    merged = copy.deepcopy(child.get_base_layer())
                    for adapter in child.active_adapters:
                        merged.weight += child.get_delta_weight(adapter).to(merged.weight.dtype)
                    swapped.append((parent, child_name, child))
                    setattr(parent, child_name, merged)
    try:
        yield model
    finally:
        for parent, child_name, child in swapped:
            setattr(parent, child_name, child)


def export_checkpoint(model: SegLLMModel, directory: str | Path) -> None:
    """A project checkpoint (safetensors + config + tokenizer), LoRA merged; fp32 weights are
    kept as they are (the engine casts at load)."""
    with plain_view(model) as plain:
        plain.save_pretrained(directory)


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
