"""The authors' released SegLLM (LLaVA-1.5-7B + HIPIE-R50) through the engine on one GPU.

    python bench/gpu_released.py --folder /data/SegLLM/all_data_checkpoint   # the real weights
    python bench/gpu_released.py                  # full-size architecture, random bf16 weights
    python bench/gpu_released.py --tiny --device cpu     # the same code on the tiny test folder

With ``--folder``: the dry run (headers only), then the folder loaded key for key in its
stored dtype. Without: the released architecture at full size (Vicuna-7B, CLIP ViT-L/14-224,
HIPIE-R50) built directly on the device in bf16, HIPIE in fp32 as upstream runs it. Then, in
one process: load time and peak memory; rounds as the node runs them (round 1 on a new frame:
CLIP + HIPIE backbone + LLM prefill + HIPIE round; later rounds: KV cache, only the new turn);
HIPIE alone per frame and per round, fp32 and bf16 (and whether bf16 picks the same answer).
Medians after warm-up, ``torch.cuda.synchronize`` around each. JSON to ``--out`` (default
``$OUT`` when set, else ``bench/results``).

Not here (see README "Using the released SegLLM checkpoints"): parity against the authors'
code with their compiled CUDA op; that needs their code built on the GPU machine, which this
project does not ship.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from gpu_latency import camera_frame, engine_rounds, time_ms
from source_tree import ROOT

sys.path.insert(0, str(ROOT / "test" / "upstream"))  # the tiny release writer (tests' helper)

from released_folder import tiny_tokenizer, write_released_folder

from segllm_ros.model.family import load_pretrained
from segllm_ros.model.hipie import HipieR50
from segllm_ros.model.released.config import RELEASED_7B, ReleasedConfig
from segllm_ros.model.released.model import ReleasedSegLLM
from segllm_ros.runtime.torch_runtime import TorchRuntime


def build_random(device: torch.device) -> ReleasedSegLLM:
    """Full size, random weights, bf16 on ``device`` (HIPIE fp32). The tokenizer is the tests'
    tiny one: latency does not depend on which ids the words get."""
    config = ReleasedConfig.from_released(RELEASED_7B)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = ReleasedSegLLM(config, tiny_tokenizer())
    finally:
        torch.set_default_dtype(torch.float32)
    return model.to_precision(torch.bfloat16).eval()


def hipie_in(hipie: HipieR50, dtype: torch.dtype, device: torch.device, repeats: int):
    """HIPIE in ``dtype``: (frame ms, round ms, answer mask, score)."""
    model = hipie.to(dtype)
    text = torch.randn(1, model.config.text_tokens, model.config.text_dim)
    text = text.to(device, dtype)
    with torch.no_grad():
        pixels = model.preprocess(camera_frame(0).image)[0].to(dtype)
        feats = model.image_features(pixels)
        frame_ms = time_ms(lambda: model.image_features(pixels), device, repeats)["median_ms"]
        round_ms = time_ms(lambda: model(feats, text), device, repeats)["median_ms"]
        mask, score = model.select_target(model(feats, text))
    return frame_ms, round_ms, mask.float() > 0, float(score)


def hipie_alone(hipie: HipieR50, device: torch.device, repeats: int) -> dict[str, Any]:
    """Per-frame backbone and per-round decoder, fp32 (as upstream) and bf16, on the same
    text tokens; whether bf16 gives the same answer."""
    out: dict[str, Any] = {}
    masks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        frame_ms, round_ms, masks[name], score = hipie_in(hipie, dtype, device, repeats)
        out.update({f"{name}_frame_ms": frame_ms, f"{name}_round_ms": round_ms})
        out[f"{name}_score"] = score
    a, b = masks["fp32"], masks["bf16"]
    out["bf16_vs_fp32_mask_iou"] = float((a & b).sum() / (a | b).sum().clamp(min=1))
    hipie.float()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="a released checkpoint folder")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny test folder (CPU check)")
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "bench" / "results"))
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    report: dict[str, Any] = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report["gpu"] = {"name": props.name, "memory_gib": props.total_memory / 2**30}
        torch.cuda.reset_peak_memory_stats(device)
    folder = args.folder
    if args.tiny:
        folder = write_released_folder(tempfile.mkdtemp(prefix="segllm_release_"), seed=0)
    t0 = time.perf_counter()
    if folder is not None:
        dry = ReleasedSegLLM.dry_run(folder)
        report["dry_run"] = {"ok": dry.ok, "summary": dry.summary()}
        print(dry.summary())
        model = load_pretrained(folder, device=str(device))
    else:
        model = build_random(device)
    report["load_s"] = time.perf_counter() - t0
    report["params"] = {
        "llm": sum(p.numel() for p in model.llm.parameters()),
        "hipie": sum(p.numel() for p in model.segmentator.parameters()),
        "total": sum(p.numel() for p in model.parameters()),
    }
    if device.type == "cuda":
        report["loaded_gib"] = torch.cuda.memory_allocated(device) / 2**30
    with torch.no_grad():
        report["engine"] = engine_rounds(TorchRuntime(model), args.conversations, args.rounds)
    report["hipie"] = hipie_alone(model.segmentator, device, args.repeats)
    if device.type == "cuda":
        report["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("gpu_released_tiny.json" if args.tiny else "gpu_released.json")
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "dry_run"}, indent=2))
    return report


if __name__ == "__main__":
    main()
