#!/usr/bin/env bash
# Real-size SegLLM latency on one GPU (7B LLaMA + CLIP ViT-L/14 + SAM ViT-H, random weights,
# bf16) against the hardware floors; one run, under 10 minutes. Writes gpu_latency.json to
# $OUT (the device tool's folder) or bench/results.
#
#   bash bench/gpu.sh
#
# Wheels in .whl/ (segment-anything, and the transformers version this project is tested
# with) are installed first when present: GPU images have no network.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout "${GPU_BENCH_TIMEOUT:-480}" python3 bench/gpu_latency.py --out "$OUT" "$@"
