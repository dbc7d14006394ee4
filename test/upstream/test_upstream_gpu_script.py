"""``bench/gpu_released.py`` (the GPU check for the released family) runs end to end on the
tiny release on the CPU, so it has not rotted when a GPU is lent. Its timings are not under
test; the report's content is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_upstream_gpu_script_runs_on_the_tiny_release(tmp_path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = ["--tiny", "--device", "cpu", "--conversations", "1", "--rounds", "3"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_released.py"), *args, "--repeats", "1",
         "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_released_tiny.json").read_text())
    assert report["dry_run"]["ok"]
    assert report["engine"]["rounds"] == 3 and report["engine"]["later_round_ms"] > 0
    assert report["params"]["hipie"] > 0 and report["params"]["llm"] > 0
    hipie = report["hipie"]
    assert 0.0 <= hipie["bf16_vs_fp32_mask_iou"] <= 1.0
    assert all(hipie[f"{p}_{s}_ms"] > 0 for p in ("fp32", "bf16") for s in ("frame", "round"))
