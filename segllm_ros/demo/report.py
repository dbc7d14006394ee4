"""What the demo shows: the per-round table, one overlay per round, a strip per conversation
and the figure of all strips (the README picture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segllm_ros.demo.scenes import DemoRound
from segllm_ros.interface.image_codec import image_from_msg
from segllm_ros.interface.mask_codec import answer_overlay, mask_iou, resize_mask

SCALE = 3
"""Overlay upscaling (nearest): the demo frames are only 128 px."""


def _mask_of(image: Any, shape: tuple[int, int]) -> np.ndarray:
    if image.height == 0 or image.width == 0:
        return np.zeros(shape, dtype=bool)
    mask = image_from_msg(image)[:, :, 0] > 127
    return mask if mask.shape == shape else resize_mask(mask, *shape)


def result_masks(result: Any, shape: tuple[int, int]) -> list[np.ndarray]:
    """Every object of the answer as a bool mask at the scene's size (reading order)."""
    if result is None:
        return []
    return [_mask_of(segment.mask, shape) for segment in result.segments]


def answer_iou(
    kind: str, masks: list[np.ndarray], truths: list[np.ndarray], shape, not_found: bool
) -> float:
    """How right an answer is, by the kind the script expects: ONE and MANY compare the union
    of the answer with the union of the targets; AMBIGUOUS gives each candidate its best-
    matching object (mean of those IoUs); NONE is 1 when the node said NOT_FOUND with no
    object (a failed round is no "not there"), else 0."""
    if kind == "none":
        return float(not_found and not masks)
    if kind == "ambiguous":
        return float(np.mean([max((mask_iou(m, t) for m in masks), default=0.0) for t in truths]))
    union = np.zeros(shape, dtype=bool)
    for m in masks:
        union |= m
    return mask_iou(union, np.any(truths, axis=0))


def _wrap(text: str, width_px: int, scale: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width_px:
            lines.append(line)
            trial = word
        line = trial
    return [*lines, line]


def render_overlay(
    rgb: np.ndarray, masks: list[np.ndarray], truths: list[np.ndarray], rec: DemoRound
) -> np.ndarray:
    """Upscaled overlay of every object of the answer (numbered when several), the query, the
    kind and the question (if any) as a caption; white outlines = ground truth."""
    h, w = rgb.shape[:2]
    big = cv2.resize(rgb, (w * SCALE, h * SCALE), interpolation=cv2.INTER_NEAREST)
    image = answer_overlay(
        big,
        [resize_mask(m, h * SCALE, w * SCALE) for m in masks],
        f"round {rec.round_index or rec.scripted_round}",
    )
    for gt in truths:
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
    lines.append(f"{rec.status_name} ({rec.kind or '-'})  IoU {rec.iou:.2f}  refs {rec.ref_rounds}")
    if rec.status_name == "AMBIGUOUS":
        lines += _wrap(rec.message, image.shape[1] - 8, scale)
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


def _strip(images: list[np.ndarray]) -> np.ndarray:
    height = max(im.shape[0] for im in images)
    padded = [
        cv2.copyMakeBorder(
            im, 0, height - im.shape[0], 0, 4, cv2.BORDER_CONSTANT, value=(255, 255, 255)
        )
        for im in images
    ]
    return np.hstack(padded)


def write_strip(path: Path, images: list[np.ndarray]) -> None:
    """All rounds of a conversation side by side."""
    cv2.imwrite(str(path), cv2.cvtColor(_strip(images), cv2.COLOR_RGB2BGR))


def write_figure(path: Path, strips: list[list[np.ndarray]]) -> None:
    """Every conversation's strip, one row each (the README picture, ``docs/demo.png``)."""
    rows = [_strip(images) for images in strips if images]
    width = max(r.shape[1] for r in rows)
    rows = [
        cv2.copyMakeBorder(
            r, 0, 6, 0, width - r.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255)
        )
        for r in rows
    ]
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))


def print_table(rounds: list[DemoRound]) -> float:
    """The per-round table; returns the mean IoU (timed-out rounds count as 0)."""
    qw = max([len(r.query) for r in rounds] + [5])
    print(
        f"\n{'conv':<7} {'round':>5}  {'query':<{qw}}  {'refs':<7} {'status':<10} "
        f"{'kind: expected -> got':<28} {'IoU':>5} {'latency_ms':>10}"
    )
    print("-" * (qw + 82))
    for r in rounds:
        refs = ",".join(map(str, r.ref_rounds)) if r.ref_rounds else "-"
        kind = f"{r.expected_kind} x{len(r.targets)} -> {r.kind or '-'} x{r.segments}"
        print(
            f"{r.conversation:<7} {r.round_index or r.scripted_round:>5}  {r.query:<{qw}}  "
            f"{refs:<7} {r.status_name:<10} {kind:<28} {r.iou:>5.2f} {r.latency_ms:>10.1f}"
        )
        if r.status_name == "AMBIGUOUS" and r.message:
            print(f"{'':<15}  asks: {r.message}")
    mean = float(np.mean([r.iou for r in rounds])) if rounds else 0.0
    print(f"mean IoU over {len(rounds)} rounds: {mean:.3f}\n")
    return mean
