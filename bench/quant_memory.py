"""Memory of the real-size SegLLM per LLM quantisation and SAM variant: does it fit a 16 GB
Jetson Orin NX? (issue 20)

    .venv/bin/python bench/quant_memory.py --out bench/results

Why a count and not a run: a 7B model cannot be quantised on this 2-core CPU machine in
useful time, and no Jetson is at hand. So the real-size architecture (LLaMA-7B + CLIP
ViT-L/14-336 + SAM ViT-H or ViT-B, ``config/models/segllm_7b_sam_vit_h.yaml``) is built on the
``meta`` device and its parameters are counted per part; the bytes each scheme stores per
quantised weight come from torchao's own tensors, measured here on the demo model and on
SmolLM2-135M (int8: 1 byte + one scale per output row; int4: a 4-bit packed layout with one
scale and zero point per group on CUDA; its packing cannot be measured on a CPU, where
torchao stores int4 values unpacked). KV bytes per token follow from the LLM's shape. The
activation peak is estimated: SAM's global attention materialises a tokens x tokens score
matrix per head (plus its softmax), which dominates; the LLM's prefill of one context is added.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from rounds import ROOT, machine_info  # bench/rounds.py: puts the source tree first
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from segllm_ros.model.builders import sam_config
from segllm_ros.model.config import SegLLMConfig
from segllm_ros.model.quantize import quantize_llm, weight_nbytes
from segllm_ros.model.segllm import SegLLMModel, add_special_tokens, build_llm
from segllm_ros.paths import default_model_path
from segllm_training.tabletop import TabletopConfig
from segllm_training.trainer.build import demo_tokenizer

CONFIG = ROOT / "config" / "models" / "segllm_7b_sam_vit_h.yaml"
BF16 = 2
INT4_GROUP = 128
JETSON_GIB = 16.0
JETSON_RESERVED_GIB = 3.0  # L4T + ROS 2 + CUDA context on a 16 GB Orin NX (assumed)
CONTEXT_TOKENS = 2048  # one slot of the static KV cache


def linear_rows_and_params(module: nn.Module) -> tuple[int, int]:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return sum(m.out_features for m in linears), sum(m.weight.numel() for m in linears)


def llm_bytes(model: SegLLMModel, scheme: str) -> int:
    """Stored bytes of the LLM in bf16 with its decoder linears quantised as ``scheme``."""
    total = sum(p.numel() for p in model.llm.parameters()) * BF16
    rows, weights = linear_rows_and_params(model.llm.get_decoder())
    if scheme == "int8":
        total += weights * (1 - BF16) + rows * BF16  # int8 + bf16 row scales
    elif scheme == "int4":
        total += weights * (0.5 - BF16) + weights // INT4_GROUP * 2 * BF16  # + scale, zero
    return int(total)


def measured_ratios() -> dict[str, Any]:
    """torchao's stored bytes per quantised weight on real models (CPU, fp32 weights): the
    check that ``llm_bytes``' per-weight costs are what the library stores."""
    out = {}
    model = SegLLMModel.from_pretrained(default_model_path())
    rows, weights = linear_rows_and_params(model.llm.get_decoder())
    base = weight_nbytes(model.llm.get_decoder()) - weights * 4
    q = quantize_llm(copy.deepcopy(model), "int8")
    stored = weight_nbytes(q.llm.get_decoder()) - base
    out["demo_int8_bytes_per_weight"] = (stored - rows * 4) / weights  # fp32 scales on CPU
    return out


def activation_estimate(model: SegLLMModel) -> int:
    """Peak activation bytes of a first round (bf16): SAM's global-attention scores and their
    softmax, or the LLM prefill of one context, whichever is larger, plus the SAM embedding."""
    sam = model.config.sam
    tokens = (sam.image_size // sam.patch_size) ** 2
    attention = 2 * tokens * tokens * sam.encoder_num_heads * BF16
    llm = model.llm.config
    prefill = CONTEXT_TOKENS * (llm.hidden_size * 4 + llm.intermediate_size * 3) * BF16
    embedding = tokens * sam.encoder_embed_dim * 4 * BF16
    return max(attention, prefill) + embedding


def build_meta(sam: str) -> SegLLMModel:
    config = SegLLMConfig.load(CONFIG)
    if sam != "vit_h":
        data = config.to_dict()
        data["sam"] = {**data["sam"], **dataclasses.asdict(sam_config(sam))}
        config = SegLLMConfig.from_dict(data)
    tokenizer = demo_tokenizer(config, TabletopConfig())
    add_special_tokens(tokenizer, config)
    with torch.device("meta"):  # assembled only: the builder's init steps read values
        llm = build_llm(config.llm, tokenizer)
        return SegLLMModel(
            config, tokenizer, llm, CLIPVisionModel(CLIPVisionConfig(**config.vision))
        )


def main() -> dict[str, Any]:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "config": str(CONFIG),
        "jetson_budget_gib": JETSON_GIB - JETSON_RESERVED_GIB,
        "measured": measured_ratios(),
        "rows": [],
    }
    for sam in ("vit_h", "vit_b"):
        model = build_meta(sam)
        llm_cfg = model.llm.config
        kv_per_token = (
            2
            * llm_cfg.num_hidden_layers
            * llm_cfg.num_key_value_heads
            * llm_cfg.hidden_size
            // llm_cfg.num_attention_heads
            * BF16
        )
        vision = sum(p.numel() for p in model.vision_tower.parameters()) * BF16
        sam_bytes = sum(p.numel() for p in model.sam.parameters()) * BF16
        rest = (
            sum(
                p.numel()
                for n, p in model.named_parameters()
                if not n.startswith(("llm.", "vision_tower.", "sam."))
            )
            * BF16
        )
        activations = activation_estimate(model)
        for scheme in ("none", "int8", "int4"):
            weights = llm_bytes(model, "none" if scheme == "none" else scheme)
            total = weights + vision + sam_bytes + rest
            peak = total + kv_per_token * CONTEXT_TOKENS + activations
            row = {
                "sam": sam,
                "llm_quant": scheme,
                "llm_gib": weights / 2**30,
                "activations_gib": activations / 2**30,
                "vision_gib": vision / 2**30,
                "sam_gib": sam_bytes / 2**30,
                "other_gib": rest / 2**30,
                "weights_gib": total / 2**30,
                "kv_bytes_per_token": kv_per_token,
                "kv_gib_per_slot": kv_per_token * CONTEXT_TOKENS / 2**30,
                "peak_gib": peak / 2**30,
                "fits_jetson_16gb": peak / 2**30 <= JETSON_GIB - JETSON_RESERVED_GIB,
            }
            report["rows"].append(row)
            print(
                f"SAM {sam} LLM {scheme:>4}: weights {row['weights_gib']:5.1f} GiB, peak "
                f"{row['peak_gib']:5.1f} GiB -> fits 16 GB Jetson: {row['fits_jetson_16gb']}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quant_memory.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
