"""The deployment benchmarks (``bench/node_overhead.py``, ``bench/memory.py``) run end to end
and write complete reports. Their shape is under test here, never their timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}


def run(script: str, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_node_overhead_report(tmp_path):
    run("node_overhead.py", "--out", str(tmp_path), "--repeats", "3")
    report = json.loads((tmp_path / "node_overhead.json").read_text())
    assert [r["resolution"] for r in report["rows"]] == ["640x480", "1280x720", "1920x1080"]
    for row in report["rows"]:
        assert {"floor_memcpy", "decode_rgb8", "decode_bgr8", "mask_to_msg"} <= set(
            row["median_ms"]
        )
        assert row["overhead_bgr8_over_floor"] > 0
    assert "pass" in report["target"] and (tmp_path / "node_overhead.png").stat().st_size > 0


def test_memory_report_counts_cache_and_history(tmp_path):
    run("memory.py", "--out", str(tmp_path), "--rounds", "2", "--conversations", "2")
    report = json.loads((tmp_path / "memory.json").read_text())
    assert set(report["backends"]) == {"torch", "onnxruntime"}
    torch_res, ort_res = report["backends"]["torch"], report["backends"]["onnxruntime"]
    first, second = torch_res["per_round"]
    assert 0 < first["kv_cache"] < second["kv_cache"] and second["ref_tokens"] > 0
    assert ort_res["per_round"] == torch_res["per_round"]  # same state, either backend
    assert torch_res["total_bytes_all_parts"] == 2 * sum(
        second[p] for p in ("kv_cache", "ref_tokens", "history")
    )
    assert (tmp_path / "memory.png").stat().st_size > 0
