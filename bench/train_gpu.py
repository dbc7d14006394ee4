"""A few LoRA training steps of the real-size SegLLM (random weights): peak GPU memory and
step time, as JSON on stdout and in ``$OUT/train_gpu.json`` when ``$OUT`` is set.

    python bench/train_gpu.py                 # LLaMA-7B + CLIP ViT-L/14-336 + SAM ViT-H, bf16
    python bench/train_gpu.py --tiny          # the same code path, tiny sizes, on a CPU

The step is the trainer's: ``setup_trainable`` (LoRA on q/v, new-token embeddings, projector,
box encoder, seg head, SAM decoder), frozen weights in bf16, trainables in fp32, bf16
autocast, gradient checkpointing in the LLM, AdamW, ``forward_batch`` on teacher-forced
multi-round conversations with references. Weights are created directly on the device in
bf16, so start-up takes seconds, not the minutes a 7B fp32 CPU init takes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_tree import ROOT, use_source_tree

use_source_tree([ROOT / "bench" / ".deps"])  # segment-anything may be carried there

from segllm_ros.model.config import SamConfig, SegLLMConfig  # noqa: E402
from segllm_ros.model.segllm import SegLLMModel  # noqa: E402
from segllm_ros.model.tokenizer import build_word_tokenizer  # noqa: E402
from segllm_training.trainer.batch import Sample, SampleRound, collate  # noqa: E402
from segllm_training.trainer.build import (  # noqa: E402
    LoraSettings,
    TrainableSettings,
    count_parameters,
    enable_checkpointing,
    setup_trainable,
)
from segllm_training.trainer.losses import LossWeights, forward_batch  # noqa: E402

WORDS = [
    "the",
    "red",
    "green",
    "blue",
    "square",
    "circle",
    "left",
    "right",
    "of",
    "to",
    "output",
    "round",
    "instance",
    "again",
]

REAL_CONFIG = ROOT / "config" / "models" / "segllm_7b_sam_vit_h.yaml"
# bench/results/train_gpu_h100_*.json were measured with the CLIP ViT-L/14-336 tower and
# LLaVA-1.5's padded 32064-row vocabulary; the yaml (DESIGN) has 224 px and 32000 rows.
MEASURED = {"vision": {"image_size": 336}, "llm": {"vocab_size": 32064}}
TINY = {
    "vision": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 56,
        "patch_size": 14,
        "projection_dim": 32,
    },
    "llm": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 512,
        "vocab_size": 256,
    },
}
TINY_SAM = SamConfig(
    image_encoder="vit",
    image_size=128,
    patch_size=16,
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=[1],
    encoder_window_size=4,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
    mask_in_chans=8,
)


def conversations(n: int, rounds: int, size: int, seed: int) -> list[Sample]:
    """Random rectangles on noise; round i refers to round i-1, like MRSeg's chains; mask
    loss on 2 random rounds (the recipe's k)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        rnds = []
        for i in range(rounds):
            x0, y0 = rng.integers(0, size // 2, 2)
            w, h = rng.integers(size // 8, size // 2, 2)
            mask = np.zeros((size, size), bool)
            mask[y0 : y0 + h, x0 : x0 + w] = True
            query = (
                "the red square"
                if i == 0
                else f"the blue circle to the left of <the output of round {i}>"
            )
            rnds.append(SampleRound(query, [i] if i else [], mask))
        picked = sorted(int(k) for k in rng.choice(rounds, min(2, rounds), replace=False))
        out.append(Sample(image, rnds, mask_rounds=picked, ref_keep=[True] * (rounds - 1)))
    return out


def real_config() -> SegLLMConfig:
    """The real-size architecture of ``REAL_CONFIG`` with the measured ``MEASURED`` sizes."""
    cfg = SegLLMConfig.load(REAL_CONFIG)
    for part, values in MEASURED.items():
        getattr(cfg, part).update(values)
    return cfg


def build(tiny: bool, device: torch.device, lora_rank: int) -> SegLLMModel:
    cfg = (
        SegLLMConfig(vision=TINY["vision"], llm=TINY["llm"], sam=TINY_SAM)
        if tiny
        else real_config()
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # frozen weights are bf16 in the real recipe
    try:
        with device:
            model = SegLLMModel.build(cfg, build_word_tokenizer(WORDS))
    finally:
        torch.set_default_dtype(previous)
    model.to(device)  # segment-anything makes its pixel mean/std outside the context
    model.sam.prompt_encoder.pe_layer.float()  # SAM's coordinate grid is fp32
    for buf in ("pixel_mean", "pixel_std"):
        setattr(model.sam, buf, getattr(model.sam, buf).float())
    lora = LoraSettings(rank=lora_rank, alpha=2 * lora_rank)
    setup_trainable(model.train(), TrainableSettings(llm="lora", lora=lora))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # trainables (and their Adam state) in fp32
    return model


def run(args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build(args.tiny, device, args.lora_rank)
    if not args.tiny or args.checkpointing:
        enable_checkpointing(model.llm)
    if device.type == "cuda":
        torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95))
    samples = conversations(args.batch * args.steps, args.rounds, args.image_size, seed=0)
    weights = LossWeights()
    times, losses = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps):
        batch = collate(samples[step * args.batch : (step + 1) * args.batch], model).to(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss, _ = forward_batch(model, batch, weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
        print(f"step {step}: loss {losses[-1]:.4f} ({times[-1]:.2f} s)", file=sys.stderr)
    counts = count_parameters(model)
    result = {
        "size": "tiny" if args.tiny else "7B + CLIP-L/14-336 + SAM ViT-H",
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "precision": "bf16 autocast, frozen bf16, trainable fp32",
        "batch_per_gpu": args.batch,
        "rounds": args.rounds,
        "seq_len": int(batch.input_ids.shape[1]),
        "params_total": counts["total"],
        "params_trainable": counts["trainable"],
        "build_s": round(build_s, 2),
        "step_s": [round(t, 3) for t in times],
        "median_step_s": round(statistics.median(times[1:] or times), 3),
        "losses": [round(v, 4) for v in losses],
        "finite": all(np.isfinite(losses)),
    }
    if device.type == "cuda":
        result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CPU check)")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2, help="conversations per step")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument(
        "--checkpointing",
        action="store_true",
        help="gradient checkpointing in --tiny too (always on at full size)",
    )
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "train_gpu.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
