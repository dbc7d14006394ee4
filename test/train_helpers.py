"""What the training tests share: the tiny tabletop experiment and the environment of
subprocesses that run this checkout's ``segllm_training`` (not an installed copy)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from segllm_training.trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "config" / "train" / "tabletop_tiny.yaml"
SOURCE_PATHS = (ROOT, ROOT / "training")  # as pytest's pythonpath (pyproject.toml)


def tiny_config(**overrides) -> TrainConfig:
    """The tiny experiment with top-level keys replaced (e.g. ``max_steps``)."""
    cfg = TrainConfig.load(TINY_CONFIG)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def write_config(cfg_dict: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg_dict))
    return path


def tiny_config_dict(**overrides) -> dict:
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data.update(overrides)
    return data


def env() -> dict[str, str]:
    """One thread per process, loopback only, offline, this checkout first on the path."""
    path = [str(p) for p in SOURCE_PATHS] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(path),
    }


def train_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "segllm_training.train",
        "--config",
        str(config),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def run_training(config: Path, out: Path, *extra: str, timeout: float = 600) -> None:
    subprocess.run(
        train_command(config, out, *extra),
        env=env(),
        check=True,
        timeout=timeout,
        cwd=ROOT,
        capture_output=True,
    )
