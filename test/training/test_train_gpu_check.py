"""The GPU training check runs its full code path on a CPU with ``--tiny``: LoRA + frozen
bf16 weights + fp32 trainables under bf16 autocast, gradient checkpointing, JSON result."""

from __future__ import annotations

import json
import subprocess
import sys

from train_helpers import ROOT, env


def test_train_gpu_check_tiny_on_cpu(tmp_path):
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "bench" / "train_gpu.sh"),
            "--tiny",
            "--cpu",
            "--steps",
            "3",
            "--image-size",
            "96",
            "--checkpointing",
        ],
        env={**env(), "OUT": str(tmp_path), "PY": sys.executable},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads((tmp_path / "train_gpu.json").read_text())
    assert json.loads(proc.stdout[proc.stdout.index("{") :]) == result
    assert result["finite"] and len(result["step_s"]) == 3
    assert 0 < result["params_trainable"] < result["params_total"]
    assert result["losses"][-1] < result["losses"][0]  # the LoRA step does train
