"""Box-prompted SAM for Visual Genome, whose annotations are boxes only.

Why here and not segment_anything's ``SamPredictor``: importing the ``segment_anything``
package pulls torchvision, which does not load beside this CPU torch build; the model comes
from :func:`segllm_ros.model.sam.build_sam` and the few preprocessing steps of the predictor
(longest side to ``image_size``, normalise, pad; boxes scaled alike) are done with torch.
One model per worker process, loaded on first use.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segllm_ros.model.transforms import to_tensor

from .config import BuildConfig
from .entries import ImageEntry, SourceError, load_image


@cache
def _model(config_items: tuple, checkpoint: str | None) -> torch.nn.Module:
    from segllm_ros.model.config import SamConfig
    from segllm_ros.model.sam import build_sam

    torch.manual_seed(0)  # without a checkpoint (tests): the same weights in every process
    sam = build_sam(SamConfig(**dict(config_items)))
    if checkpoint:
        state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
        missing, unexpected = sam.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{checkpoint} does not fit the configured SAM: missing "
                f"{missing[:5]}, unexpected {unexpected[:5]}"
            )
    return sam.eval()


@torch.inference_mode()
def segment_boxes(
    sam: torch.nn.Module, image: np.ndarray, boxes: list[tuple[int, int, int, int]]
) -> list[np.ndarray]:
    """One bool HxW mask per ``(x0, y0, x1, y1)`` box (single-mask output, SAM threshold)."""
    h, w = image.shape[:2]
    size = sam.image_encoder.img_size  # what sam.preprocess pads to and postprocess_masks reads
    scale = size / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)  # SamPredictor's rounding (half up)
    x = to_tensor(image)[None]
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    embedding = sam.image_encoder(sam.preprocess(x))
    box_t = torch.tensor(boxes, dtype=torch.float32) * torch.tensor(
        [nw / w, nh / h, nw / w, nh / h]
    )
    sparse, dense = sam.prompt_encoder(points=None, boxes=box_t, masks=None)
    low_res, _ = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    masks = sam.postprocess_masks(low_res, (nh, nw), (h, w)) > sam.mask_threshold
    return [m[0].numpy() for m in masks]


def box_segmenter(cfg: BuildConfig):
    """``segment(entry, boxes)`` for :func:`generators.interactional.interactional`."""

    def segment(entry: ImageEntry, boxes: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
        image = load_image(entry.image_file)
        if image.shape[:2] != (entry.height, entry.width):
            raise SourceError(
                entry.image_file,
                f"image is {image.shape[1]}x{image.shape[0]}, "
                f"image_data.json says {entry.width}x{entry.height}",
            )
        sam = _model(
            tuple(
                sorted(
                    (k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.sam_config.items()
                )
            ),
            cfg.sam_weights(),
        )
        return segment_boxes(sam, image, boxes)

    return segment
