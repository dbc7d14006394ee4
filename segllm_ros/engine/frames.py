"""Camera frames as the engine takes them: whether the model can take one at all, and the
smaller copy a conversation's history keeps of it (memory per round must not grow with the
camera's resolution)."""

from __future__ import annotations

import cv2
import numpy as np

from segllm_ros.engine.history import Frame

__all__ = ["UnsupportedFrameError", "check_frame", "history_frame", "resize_mask"]


class UnsupportedFrameError(ValueError):
    """A frame the model cannot take (e.g. so elongated that a side vanishes at its input)."""


def check_frame(frame: Frame, input_size: int) -> None:
    """Refuse frames whose short side would vanish at an ``input_size`` px model input
    (e.g. 1x100000)."""
    short, long = sorted((frame.height, frame.width))
    if short * input_size / long < 1:
        raise UnsupportedFrameError(
            f"a {frame.width}x{frame.height} frame is too elongated for the model: its "
            f"short side would be under 1 px at the {input_size} px input"
        )


def history_frame(frame: Frame, max_side: int) -> Frame:
    """``frame`` with at most ``max_side`` px on its long side (same key: it stands for the
    same camera frame); the frame itself when it is small enough."""
    scale = max_side / max(frame.height, frame.width)
    if scale >= 1:
        return frame
    size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
    image = cv2.resize(np.asarray(frame.image), size, interpolation=cv2.INTER_AREA)
    return Frame(image=image, stamp_ns=frame.stamp_ns, frame_id=frame.frame_id, key=frame.key)


def resize_mask(mask: np.ndarray, frame: Frame) -> np.ndarray:
    """A bool mask at ``frame``'s size (nearest neighbour)."""
    if mask.shape == (frame.height, frame.width):
        return mask
    return cv2.resize(
        mask.astype(np.uint8), (frame.width, frame.height), interpolation=cv2.INTER_NEAREST
    ).astype(bool)
