"""What runs around the released model's networks (``segllm_ros.model.processing``'s
functions for this family; the runtime calls them through ``Runtime.processing``).

Upstream, not this project's segllm-sam, decides each step:
- CLIP sees the frame as Hugging Face's ``CLIPImageProcessor`` gives it: shortest side to 224
  (bicubic), centre crop. HIPIE sees it resized to 1024 on the longest side and padded.
- A reference (an earlier round's mask) is cut from the frame *at HIPIE's input scale*: pixels
  outside the mask blacked out, its box cropped, pasted top-left on a black square, through
  CLIP's processor (mask token = CLS); its box is ``[y0, x0, y1, x1] / 1024`` in that space.
  Upstream boxes the HIPIE-predicted box; the engine keeps masks only, so the mask's box.
- Image and reference features are *added* to the embedding of their ``<video>``
  placeholder, in order: the image's 256 (first round) then two per reference.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from segllm_ros.model import transforms as T
from segllm_ros.model.processing import FrameFeatures
from segllm_ros.model.released.config import ReleasedConfig


def input_size(config: ReleasedConfig) -> int:
    """HIPIE's square input side (its masks come back over that padded square)."""
    return config.hipie.image_size


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    """Resampled pixels rounded to 0..255, as upstream's PIL/uint8 resizes leave them."""
    return x.round().clamp(0, 255)


def clip_pixels(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) 0..255 -> (3, size, size) CLIP pixels: shortest side to ``size`` (bicubic),
    centre crop, CLIP-normalised."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, int(h * scale)), max(size, int(w * scale))
    x = F.interpolate(image[None], (nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = _as_uint8(x[0, :, top : top + size, left : left + size]) / 255.0
    mean = torch.tensor(T.CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(T.CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


def encode_frame(graphs, image: np.ndarray | torch.Tensor) -> FrameFeatures:
    """One camera frame (HxWx3 uint8) -> CLIP tokens and HIPIE's backbone levels (the part
    of the mask decoder that depends on the frame only; in ``sam_embedding``'s place)."""
    img = T.to_tensor(image).to(graphs.device)
    pixels = clip_pixels(img, graphs.clip_size)[None].to(graphs.dtype)
    tokens = graphs.vision_tokens(pixels)[0]
    hw = (int(img.shape[1]), int(img.shape[2]))
    return FrameFeatures(hw, tokens, graphs.sam_encoder(image))


def reference_inputs(
    image: torch.Tensor, masks: torch.Tensor, clip_size: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Earlier masks (R, H, W) on ``image`` (3, H, W) 0..255 -> CLIP pixels of each masked
    crop (R, 3, clip, clip) and each box ``[y0, x0, y1, x1] / size`` (R, 4), both at HIPIE's
    input scale; an empty mask gives zeros for both (upstream's stand-in)."""
    scaled = _as_uint8(T.resize_longest(image, size))
    small = T.resize_longest(masks.float(), size) >= 0.5  # masks as channels; PIL rounds up
    crops, boxes = [], []
    for mask in small:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if ys.numel() == 0:
            crops.append(torch.zeros(3, clip_size, clip_size, device=image.device))
            boxes.append(torch.zeros(4, device=image.device))
            continue
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        side = max(y1 - y0, x1 - x0)
        square = torch.zeros(3, side, side, device=image.device)
        square[:, : y1 - y0, : x1 - x0] = (scaled * mask)[:, y0:y1, x0:x1]
        crops.append(clip_pixels(square, clip_size))
        boxes.append(torch.tensor([y0, x0, y1, x1], device=image.device) / size)
    return torch.stack(crops), torch.stack(boxes).float()


def reference_tokens(
    graphs, image: torch.Tensor, masks: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Earlier masks (R, H, W) on ``image`` (3, H, W) -> (2R, hidden) tokens interleaved
    [mask_1, box_1, mask_2, ...] (upstream's order of the placeholders)."""
    if masks.shape[0] == 0:
        return torch.zeros(0, graphs.hidden_size, device=image.device)
    crops, boxes = reference_inputs(image, masks, graphs.clip_size, input_size(graphs.config))
    tokens = graphs.encode_references(crops.to(graphs.dtype), boxes.to(graphs.dtype), keep)
    return tokens.reshape(-1, tokens.shape[-1])


def embed(
    graphs,
    input_ids: torch.Tensor,
    image_tokens: torch.Tensor | None,
    ref_tokens: torch.Tensor | None,
) -> torch.Tensor:
    """Token embeddings (1, L, hidden) with the image and reference features added at the
    ``<video>`` placeholders: the image's when the ids hold its placeholders (the first
    round's), then the references'."""
    if input_ids.shape[0] != 1:
        raise ValueError("the released family embeds one conversation at a time")
    embeds = graphs.token_embeddings(input_ids)
    where = (input_ids[0] == graphs.image_token_id).nonzero()[:, 0]
    refs = 0 if ref_tokens is None else ref_tokens.shape[0]
    parts = [] if ref_tokens is None else [ref_tokens]
    if image_tokens is not None and len(where) == refs + image_tokens.shape[0]:
        parts.insert(0, image_tokens)
    elif len(where) != refs:
        raise ValueError(f"{len(where)} <video> placeholders for {refs} reference tokens")
    if not parts:
        return embeds
    features = torch.cat(parts).to(embeds.dtype)
    return embeds.index_add(1, where, features[None])
