#!/usr/bin/env bash
# One GPU check of full-scale training (issue 4): a few LoRA steps of LLaMA-7B + CLIP
# ViT-L/14-336 + SAM ViT-H with random weights in bf16; prints peak memory and step time as
# JSON (and writes $OUT/train_gpu.json when $OUT is set). Under 8 minutes on one H100.
#   bench/train_gpu.sh            # full size on the GPU
#   bench/train_gpu.sh --tiny     # the same code path on a CPU
# Needs torch, transformers, peft and segment-anything; a copy of segment-anything may be
# placed in bench/.deps/ (no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-$(command -v python3 || command -v python)}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec timeout "${TIMEOUT_S:-450}" "$PY" bench/train_gpu.py "$@"
