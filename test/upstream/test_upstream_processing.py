"""The released family's frame and reference preprocessing against upstream's (recorded once
from the authors' code outside this repository: fixtures/released_processing.npz): CLIP sees
the frame as ``CLIPImageProcessor`` gives it, and a reference's mask token and box token get
the crop and box the authors' CLI builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segllm_ros.model import transforms as T
from segllm_ros.model.released.processing import clip_pixels, reference_inputs

FIXTURE = Path(__file__).parent / "fixtures" / "released_processing.npz"


def processing_inputs() -> tuple[np.ndarray, np.ndarray]:
    """A 300x400 frame with smooth colour ramps and edges, and an elliptic object mask."""
    ys, xs = np.mgrid[0:300, 0:400].astype(np.float32)
    image = np.stack([xs * 0.6, ys * 0.8, 128 + 100 * np.sin(xs / 17) * np.cos(ys / 23)], -1)
    image[(xs // 40 + ys // 40) % 2 == 0] *= 0.5
    mask = ((xs - 250) / 70) ** 2 + ((ys - 120) / 45) ** 2 < 1
    return image.clip(0, 255).astype(np.uint8), mask


def test_upstream_processing_clip_frame() -> None:
    """Shortest side to 224 (bicubic), centre crop, CLIP normalisation: within one 8-bit level
    of the authors' ``CLIPImageProcessor`` (the fixture stores float16)."""
    image, _ = processing_inputs()
    ours = clip_pixels(T.to_tensor(image), 224).numpy()
    theirs = np.load(FIXTURE)["clip_image"].astype(np.float32)
    level = 1 / 255 / min(T.CLIP_STD)
    assert np.abs(ours - theirs).max() <= 1.05 * level


def test_upstream_processing_reference_inputs() -> None:
    """The box token's input is exactly upstream's; the masked crop's pixels agree except
    along the mask's outline, where our resize of the mask to HIPIE's scale (torch bilinear)
    and PIL's (fixed point) round a few boundary pixels differently."""
    image, mask = processing_inputs()
    crops, boxes = reference_inputs(T.to_tensor(image), torch.from_numpy(mask)[None], 224, 1024)
    ref = np.load(FIXTURE)
    np.testing.assert_array_equal(boxes[0].numpy(), ref["box"])
    diff = np.abs(crops[0].numpy() - ref["mask_crop"].astype(np.float32))
    off = (diff > 0.05).any(0).mean()  # share of crop pixels off by > ~3 levels
    print(f"reference crop vs the authors': mean |diff| {diff.mean():.4f}, pixels off {off:.2%}")
    assert diff.mean() < 0.005
    assert off < 0.01
