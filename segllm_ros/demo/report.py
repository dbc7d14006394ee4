"""What the demo shows: the per-round table, one overlay per round, one strip per conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segllm_ros.demo.scenes import DemoRound
from segllm_ros.interface.image_codec import image_from_msg
from segllm_ros.interface.mask_codec import overlay, resize_mask

SCALE = 3
"""Overlay upscaling (nearest): the demo frames are only 128 px."""


def result_mask(result: Any, shape: tuple[int, int]) -> np.ndarray:
    """The result's mono8 mask as bool at the scene's size; empty when there is none."""
    if result is None or result.mask.height == 0 or result.mask.width == 0:
        return np.zeros(shape, dtype=bool)
    mask = image_from_msg(result.mask)[:, :, 0] > 127
    return mask if mask.shape == shape else resize_mask(mask, *shape)


def _wrap(text: str, width_px: int, scale: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width_px:
            lines.append(line)
            trial = word
        line = trial
    return [*lines, line]


def render_overlay(rgb: np.ndarray, mask: np.ndarray, gt: np.ndarray, rec: DemoRound) -> np.ndarray:
    """Upscaled overlay with the query as a caption; white outline = ground truth."""
    h, w = rgb.shape[:2]
    big = cv2.resize(rgb, (w * SCALE, h * SCALE), interpolation=cv2.INTER_NEAREST)
    image = overlay(
        big,
        [resize_mask(mask, h * SCALE, w * SCALE)],
        labels=[f"round {rec.round_index or rec.scripted_round}"],
    )
    contours, _ = cv2.findContours(
        resize_mask(gt, h * SCALE, w * SCALE).astype(np.uint8),
        cv2.RETR_EXTERNAL,
        cv2.CHAIN_APPROX_SIMPLE,
    )
    cv2.drawContours(image, contours, -1, (255, 255, 255), 1, lineType=cv2.LINE_AA)
    scale, line_h = 0.45, 18
    lines = _wrap(
        f"{rec.conversation} round {rec.scripted_round}: {rec.query}", image.shape[1] - 8, scale
    )
    lines.append(
        f"refs {rec.ref_rounds}  {rec.status_name}  IoU {rec.iou:.2f}  (white = ground truth)"
    )
    band = np.full((line_h * len(lines) + 6, image.shape[1], 3), 255, dtype=np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(
            band,
            line,
            (4, line_h * (i + 1)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return np.vstack([band, image])


def write_strip(path: Path, images: list[np.ndarray]) -> None:
    """All rounds of a conversation side by side (the README picture)."""
    height = max(im.shape[0] for im in images)
    padded = [
        cv2.copyMakeBorder(
            im, 0, height - im.shape[0], 0, 4, cv2.BORDER_CONSTANT, value=(255, 255, 255)
        )
        for im in images
    ]
    cv2.imwrite(str(path), cv2.cvtColor(np.hstack(padded), cv2.COLOR_RGB2BGR))


def print_table(rounds: list[DemoRound]) -> float:
    """The per-round table; returns the mean IoU (timed-out rounds count as 0)."""
    qw = max([len(r.query) for r in rounds] + [5])
    print(
        f"\n{'conv':<7} {'round':>5}  {'query':<{qw}}  {'refs':<7} {'status':<10} "
        f"{'IoU':>5} {'latency_ms':>10}"
    )
    print("-" * (qw + 53))
    for r in rounds:
        refs = ",".join(map(str, r.ref_rounds)) if r.ref_rounds else "-"
        print(
            f"{r.conversation:<7} {r.round_index or r.scripted_round:>5}  {r.query:<{qw}}  "
            f"{refs:<7} {r.status_name:<10} {r.iou:>5.2f} {r.latency_ms:>10.1f}"
        )
    mean = float(np.mean([r.iou for r in rounds])) if rounds else 0.0
    print(f"mean IoU over {len(rounds)} rounds: {mean:.3f}\n")
    return mean
