"""Masks and boxes: compact transport (COCO RLE), ROI boxes, metrics and visual overlays.

Why: segmentation results leave the node as JSON/messages (RLE keeps a 1080p mask to a few
hundred bytes), as ``sensor_msgs/RegionOfInterest`` boxes, as ``mono8`` mask images and as an
RGB overlay for humans. Keeping these helpers ROS-free lets the tests and the demo share them.
"""

from __future__ import annotations

import warnings
from array import array
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from segllm_ros.interface.image_codec import set_image_fields

# pycocotools' Cython decode calls np.array(..., copy=False) on an object whose __array__
# predates NumPy 2's copy keyword: harmless, but noisy on every call. Filtered once here (a
# catch_warnings block per call would reset every module's once-only warning registry).
warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword")

__all__ = [
    "DEFAULT_COLORS",
    "answer_overlay",
    "box_to_roi",
    "fill_mask_msg",
    "mask_iou",
    "mask_to_box",
    "mask_to_mono8",
    "mask_to_rle",
    "overlay",
    "resize_mask",
    "rle_to_mask",
]

Color = tuple[int, int, int]

DEFAULT_COLORS: tuple[Color, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)
"""Distinct RGB colours, cycled when ``overlay`` is given no colours."""


def _as_bool_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D HxW array, got shape {arr.shape}")
    return arr if arr.dtype == np.bool_ else arr != 0


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode an ``HxW`` mask as COCO compressed RLE with ``counts`` as ``str`` (JSON-safe)."""
    arr = _as_bool_mask(mask)
    rle = coco_mask.encode(np.asfortranarray(arr, dtype=np.uint8))
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    height, width = (int(v) for v in rle["size"])
    return {"size": [height, width], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode COCO RLE (``counts`` as str, bytes, or an uncompressed list) to a bool ``HxW``."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a COCO RLE dict with 'size' [h, w] and 'counts': {rle!r}") from exc
    if isinstance(counts, list):
        compressed = coco_mask.frPyObjects(
            {"size": [height, width], "counts": counts}, height, width
        )
    else:
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        compressed = {"size": [height, width], "counts": bytes(counts)}
    decoded = coco_mask.decode(compressed)
    return np.ascontiguousarray(decoded, dtype=bool)


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive; ``None`` if empty."""
    arr = _as_bool_mask(mask)
    cols = np.flatnonzero(arr.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(arr.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_to_roi(box: Sequence[int]) -> tuple[int, int, int, int]:
    """Convert ``(x0, y0, x1, y1)`` to ``RegionOfInterest`` ``(x_offset, y_offset, w, h)``."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 < x0 or y1 < y0 or x0 < 0 or y0 < 0:
        raise ValueError(f"invalid box {tuple(box)}: need 0 <= x0 <= x1 and 0 <= y0 <= y1")
    return x0, y0, x1 - x0, y1 - y0


def mask_to_mono8(mask: np.ndarray) -> np.ndarray:
    """Mask as a ``mono8`` image: 255 inside, 0 outside (what image viewers expect)."""
    arr = _as_bool_mask(mask)
    return np.multiply(arr.view(np.uint8), np.uint8(255))  # one pass over the pixels


def fill_mask_msg(msg: Any, mask: np.ndarray) -> Any:
    """Fill a (duck-typed) ``sensor_msgs/Image`` with ``mask`` as mono8 0/255, in one copy
    into the message's own buffer plus an in-place scale while it is still in cache (the
    per-frame publishing cost: bench/node_overhead.py)."""
    arr = np.ascontiguousarray(_as_bool_mask(mask))
    data = array("B")
    data.frombytes(arr.view(np.uint8))
    pixels = np.frombuffer(data, dtype=np.uint8)
    np.multiply(pixels, np.uint8(255), out=pixels)
    del pixels  # release the buffer export so the array stays resizable
    return set_image_fields(msg, arr.shape[0], arr.shape[1], "mono8", arr.shape[1], data)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two same-sized masks; 1.0 when both are empty."""
    ma = _as_bool_mask(a, "a")
    mb = _as_bool_mask(b, "b")
    if ma.shape != mb.shape:
        raise ValueError(f"mask shapes differ: {ma.shape} vs {mb.shape}")
    union = int(np.count_nonzero(ma | mb))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(ma & mb)) / union


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a mask with nearest-neighbour sampling (keeps it binary) to ``height x width``."""
    arr = _as_bool_mask(mask)
    if height <= 0 or width <= 0:
        raise ValueError(f"target size must be positive, got {height}x{width}")
    if arr.shape == (height, width):
        return arr.copy()
    resized = cv2.resize(
        arr.astype(np.uint8), (int(width), int(height)), interpolation=cv2.INTER_NEAREST
    )
    return resized.astype(bool)


def _as_color(value: Sequence[int]) -> Color:
    values = [int(v) for v in value]
    if len(values) < 3 or any(not 0 <= v <= 255 for v in values[:3]):
        raise ValueError(f"colour must be (r, g, b) with values 0..255, got {tuple(value)}")
    return values[0], values[1], values[2]


def _text_color(color: Color) -> Color:
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def overlay(
    rgb: np.ndarray,
    masks: Sequence[np.ndarray],
    colors: Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Draw translucent coloured masks, their contours and optional labels on an RGB image.

    Returns a new ``HxWx3`` uint8 RGB image; the input is not modified. Labels are drawn at
    the top-left of each mask's box. Empty masks are skipped (their label too).
    """
    image = np.asarray(rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"rgb must be an HxWx3 uint8 array, got {image.dtype} {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if labels is not None and len(labels) != len(masks):
        raise ValueError(f"got {len(labels)} labels for {len(masks)} masks")
    palette = list(colors) if colors else list(DEFAULT_COLORS)
    height, width = image.shape[:2]
    out = np.array(image, dtype=np.uint8, order="C", copy=True)

    # Fill first, then outlines and labels, so later masks never paint over earlier text.
    drawn: list[tuple[np.ndarray, tuple[int, int, int, int], Color, int]] = []
    for index, mask in enumerate(masks):
        m = _as_bool_mask(mask, f"masks[{index}]")
        if m.shape != (height, width):
            raise ValueError(
                f"masks[{index}] has shape {m.shape}, image is {height}x{width}; "
                "resize it first (resize_mask)"
            )
        color = _as_color(palette[index % len(palette)])
        box = mask_to_box(m)
        if box is None:
            continue
        # Blend only inside the mask's box: cheap for small objects on large frames.
        x0, y0, x1, y1 = box
        crop = m[y0:y1, x0:x1]
        roi = out[y0:y1, x0:x1]
        tint = np.empty_like(roi)
        tint[:] = color
        blended = cv2.addWeighted(roi, 1.0 - alpha, tint, alpha, 0.0)
        np.copyto(roi, blended, where=crop[:, :, None])
        drawn.append((crop, box, color, index))

    thickness = max(1, round(min(height, width) / 400))
    for crop, box, color, _ in drawn:
        contours, _hier = cv2.findContours(
            crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=box[:2]
        )
        cv2.drawContours(out, contours, -1, color, thickness, lineType=cv2.LINE_AA)

    if labels is not None:
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = max(0.35, min(height, width) / 1000)
        text_thickness = max(1, round(scale * 1.5))
        for _, box, color, index in drawn:
            text = str(labels[index])
            if not text:
                continue
            (tw, th), baseline = cv2.getTextSize(text, font, scale, text_thickness)
            x = min(max(box[0], 0), max(width - tw - 2, 0))
            y = max(box[1], th + baseline + 2)
            cv2.rectangle(out, (x, y - th - baseline - 2), (x + tw + 2, y), color, cv2.FILLED)
            cv2.putText(
                out,
                text,
                (x + 1, y - baseline - 1),
                font,
                scale,
                _text_color(color),
                text_thickness,
                cv2.LINE_AA,
            )
    return out


def answer_overlay(rgb: np.ndarray, masks: Sequence[np.ndarray], query: str) -> np.ndarray:
    """An answer's objects on its frame: one object labelled with the query, several numbered
    1, 2, ... in the given (reading) order, the numbers a clarifying question uses."""
    labels = [query] if len(masks) == 1 else [str(i) for i in range(1, len(masks) + 1)]
    return overlay(rgb, masks, labels=labels)
