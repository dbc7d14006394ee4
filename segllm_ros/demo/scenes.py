"""What the demo runs on: the model folder, the bundled scenes, one record per scripted round."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from segllm_ros.interface.mask_codec import rle_to_mask
from segllm_ros.paths import default_model_path

MODEL_ENV = "SEGLLM_DEMO_MODEL"
"""Overrides the default model (e.g. a checkpoint still being trained)."""


class DemoError(RuntimeError):
    """A failure the demo reports in one line and turns into an exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class DemoRound:
    """One scripted turn and what the node answered (one row of the table / summary)."""

    conversation: str
    scripted_round: int
    request_id: str
    query: str
    ref_rounds_sent: list[int]
    target: int
    target_name: str
    expected_kind: str = "one"  # the answer kind the script expects (issue 17)
    targets: list[int] = field(default_factory=list)  # the objects the answer should hold
    kind: str = ""  # the answer kind the node gave
    segments: int = 0  # how many objects it answered with
    round_index: int = 0
    ref_rounds: list[int] | None = None
    status: int = -1
    status_name: str = "TIMEOUT"
    message: str = ""
    found: bool = False
    score: float = 0.0
    iou: float = 0.0
    latency_ms: float = 0.0
    queue_ms: float = 0.0
    model_ms: float = 0.0
    frame_stamp_ns: int = 0
    overlay: str = ""


def resolve_model(arg: str | None) -> Path:
    """``--model``, else ``$SEGLLM_DEMO_MODEL``, else the bundled demo checkpoint."""
    try:
        path = Path(arg or os.environ.get(MODEL_ENV) or default_model_path())
    except FileNotFoundError as exc:
        raise DemoError(f"no model: {exc}; pass --model DIR or set {MODEL_ENV}", 2) from exc
    if not (path / "config.json").is_file():
        raise DemoError(f"model folder {path} has no config.json", 2)
    return path.resolve()


def load_demo_data(data_dir: Path) -> list[dict[str, Any]]:
    """Scenes with their RGB image, ground-truth masks and scripted conversation."""
    try:
        spec = json.loads((data_dir / "demo.json").read_text())
    except (OSError, ValueError) as exc:
        raise DemoError(f"cannot read {data_dir / 'demo.json'}: {exc}", 2) from exc
    scenes = []
    for scene in spec["scenes"]:
        bgr = cv2.imread(str(data_dir / scene["image"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DemoError(f"cannot read {data_dir / scene['image']}", 2)
        scene["rgb"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        scene["masks"] = [rle_to_mask(obj["mask"]) for obj in scene["objects"]]
        scenes.append(scene)
    return scenes
