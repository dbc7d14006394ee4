"""``bench/rounds.py`` runs end to end and writes a complete report.

Why: the benchmark is run by hand (``make bench``) and rarely, so without this test an engine
or config change could break it unnoticed. A tiny random model is enough: the report's shape
is under test here, never its timings (CI machines are too noisy for thresholds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segllm_training.trainer.build import build_model
from segllm_training.trainer.config import TrainConfig
from segllm_training.trainer.loop import source_vocabulary

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "rounds.py"
ROUNDS = 3


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained model with the demo architecture, built like the trainer builds the
    demo recipe's first stage (the context blocks put back)."""
    cfg = TrainConfig.load(ROOT / "config" / "train" / "demo_stage1.yaml")
    cfg.model.overrides = {}
    torch.manual_seed(0)
    model = build_model(cfg.model, source_vocabulary(cfg))
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def report(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench_out")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--repeats",
            "1",
            "--rounds",
            str(ROUNDS),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "rounds.json").read_text()), out


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


def test_report_has_machine_and_config(report: tuple[dict, Path]) -> None:
    data, _ = report
    machine = data["machine"]
    for key in ("cpu_model", "torch", "torch_threads"):
        assert machine[key]
    assert machine["torch_threads"] == 1  # the default: one thread
    config = data["config"]
    assert config["rounds"] == ROUNDS and config["repeats"] == 1
    turns = config["conversation"]
    assert len(turns) == ROUNDS
    assert turns[0]["ref_rounds"] == []
    # Every later round exercises the reference (mask token) path, only on earlier rounds.
    for turn in turns[1:]:
        assert 1 <= len(turn["ref_rounds"]) <= 2
        assert all(1 <= k < turn["round"] for k in turn["ref_rounds"])


def test_per_round_stats_are_positive(report: tuple[dict, Path]) -> None:
    data, _ = report
    rounds = data["rounds"]
    assert [row["round"] for row in rounds] == list(range(1, ROUNDS + 1))
    for row in rounds:
        for mode in ("cached", "recompute"):
            wall = row[mode]["wall_ms"]
            for stat in ("median", "min", "max", "mean"):
                assert _positive(wall[stat]), (row["round"], mode, stat, wall)
            assert wall["min"] <= wall["median"] <= wall["max"]
            engine = row[mode]["engine_ms_median"]
            assert set(engine) >= {"image", "llm", "mask", "total"}
            assert _positive(engine["llm"]) and _positive(engine["mask"])
            assert _positive(engine["total"])
    assert all(len(reps) == 1 and len(reps[0]) == ROUNDS for reps in data["raw_wall_ms"].values())


def test_ratios_and_plot(report: tuple[dict, Path]) -> None:
    data, out = report
    ratios = data["ratios"]
    assert ratios["last_round"] == ROUNDS
    for key in ("cached_last_over_cached_round2", "recompute_over_cached_at_last_round"):
        assert _positive(ratios[key]["value"]) and _positive(ratios[key]["value_on_min"])
        assert isinstance(ratios[key]["pass"], bool)
        assert ratios[key]["target"]
    png = out / "rounds.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
