"""Image and mask transforms between camera frames and the two image encoders.

Written with torch ops (no torchvision) so they run beside any torch build and export to ONNX.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_tensor(image) -> torch.Tensor:
    """HxWx3 uint8 (NumPy or tensor) -> float (3, H, W) in 0..255."""
    if not isinstance(image, torch.Tensor):
        image = torch.from_numpy(np.require(image, requirements="W"))  # frames are read-only
    return image.permute(2, 0, 1).float()


def clip_preprocess(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) 0..255 -> (3, size, size) CLIP-normalised (squash resize, as LLaVA-1.5 pads
    to square first; frames here are resized directly to keep the whole field of view)."""
    x = F.interpolate(
        image[None] / 255.0, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


def clip_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) 0..255 -> (B, 3, size, size) CLIP pixels: the vision graph's input."""
    return torch.stack([clip_preprocess(im, size) for im in images])


def sam_batch(
    images: torch.Tensor, size: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor
) -> torch.Tensor:
    """(B, 3, H, W) 0..255 -> (B, 3, size, size) SAM pixels: the SAM encoder graph's input."""
    return torch.stack([sam_preprocess(im, size, pixel_mean, pixel_std) for im in images])


def reference_inputs(
    image: torch.Tensor, masks: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask encoder's inputs for earlier masks (R, H, W) on ``image`` (3, H, W): CLIP
    pixels of each masked crop (R, 3, size, size) and each mask's normalised box (R, 4).
    Kept outside the graphs: cropping to a data-dependent box does not export."""
    crops = torch.stack([clip_preprocess(masked_crop(image, m, size), size) for m in masks])
    return crops, torch.stack([mask_box(m) for m in masks])


def masked_crop(image: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
    """The mask encoder's input: pixels outside ``mask`` zeroed, cropped to the mask's box,
    pasted top-left on a black square, resized to ``size``. Returns (3, size, size) 0..255."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return torch.zeros(3, size, size, device=image.device)
    y0, y1 = int(ys.min()), int(ys.max()) + 1
    x0, x1 = int(xs.min()), int(xs.max()) + 1
    crop = (image * mask[None].to(image.dtype))[:, y0:y1, x0:x1]
    side = max(y1 - y0, x1 - x0)
    square = torch.zeros(3, side, side, device=image.device)
    square[:, : y1 - y0, : x1 - x0] = crop
    return F.interpolate(square[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def mask_box(mask: torch.Tensor) -> torch.Tensor:
    """(x0, y0, x1, y1) of a mask normalised to [0, 1] by the mask size; zeros if empty."""
    h, w = mask.shape
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return torch.zeros(4, device=mask.device)
    return torch.tensor(
        [xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h],
        device=mask.device,
        dtype=torch.float32,
    )


def sam_preprocess(
    image: torch.Tensor, size: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor
) -> torch.Tensor:
    """SAM's input: longest side resized to ``size``, normalised, zero-padded to a square."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    x = F.interpolate(
        image[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
    )[0]
    x = (x - pixel_mean.view(3, 1, 1)) / pixel_std.view(3, 1, 1)
    return F.pad(x, (0, size - nw, 0, size - nh))


def resize_longest(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) -> (C, h, w) with the longest side ``size``: bilinear, antialiased, sides
    rounded half up as ``segment_anything``'s ``ResizeLongestSide`` (which the released
    SegLLM's HIPIE input uses) rounds them."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    shape = (int(h * scale + 0.5), int(w * scale + 0.5))
    return F.interpolate(image[None], shape, mode="bilinear", align_corners=False, antialias=True)[
        0
    ]


def resize_to_input_frame(mask: torch.Tensor, frame_hw: tuple[int, int], size: int) -> torch.Tensor:
    """A full-frame mask -> SAM input space (longest side ``size``, padded), for dense prompts
    and training targets. Input (..., H, W) float; output (..., size, size)."""
    h, w = frame_hw
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    lead = mask.shape[:-2]
    x = F.interpolate(
        mask.reshape(-1, 1, h, w).float(), size=(nh, nw), mode="bilinear", align_corners=False
    )
    x = F.pad(x, (0, size - nw, 0, size - nh))
    return x.reshape(*lead, size, size)


def postprocess_masks(low_res: torch.Tensor, frame_hw: tuple[int, int], size: int) -> torch.Tensor:
    """SAM low-res logits (N, 1, s, s) -> logits at the frame's resolution (N, H, W)."""
    h, w = frame_hw
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    x = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
    x = x[..., :nh, :nw]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
