"""What runs around the networks: frame and earlier-mask preprocessing, placeholder filling.

Written once against ``Graphs`` (one call per exported graph), which the torch model, its
``forward`` and every runtime implement; so the torch and graph paths differ only in what
executes the graphs. Crops to data-dependent boxes and resizes stay here, outside the graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from segllm_ros.model import transforms as T
from segllm_ros.model.config import SegLLMConfig
from segllm_ros.model.sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD


class Graphs(Protocol):
    """A SegLLM's networks, one method per graph of ``runtime.manifest.GRAPHS`` that takes
    preprocessed input (the LLM, LM-head and mask-decoder graphs are called by their users).
    Float inputs are handed over in ``dtype``."""

    config: SegLLMConfig
    image_token_id: int
    ref_token_id: int

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def clip_size(self) -> int: ...

    @property
    def hidden_size(self) -> int: ...

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP pixels (B, 3, S, S) -> projected patch tokens (B, N, hidden)."""

    def sam_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        """SAM pixels (B, 3, S, S) -> image embeddings (B, C, h, w)."""

    def encode_references(
        self, crops: torch.Tensor, boxes: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Masked-crop CLIP pixels (R, 3, S, S) + boxes (R, 4) -> (R, 2, hidden); ``keep``
        is the training draw of reference-token dropout (None outside training)."""

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> the LLM's input embeddings (B, L, hidden)."""


@dataclass
class FrameFeatures:
    """Per-frame work that every round on that frame reuses. No pixels: a cache of these
    must not hold a full-resolution float copy of every frame (reference crops are taken from
    the conversation's own frames)."""

    hw: tuple[int, int]  # the frame's (H, W)
    image_tokens: torch.Tensor  # (N, llm_hidden)
    sam_embedding: torch.Tensor  # (1, C, h, w)


def input_size(config: SegLLMConfig) -> int:
    """Side of the square the mask decoder's input frame is resized and padded to."""
    return config.sam.image_size


def image_tokens(graphs: Graphs, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """(B, 3, H, W) 0..255, or B images of any sizes -> (B, N, hidden) image tokens."""
    return graphs.vision_tokens(T.clip_batch(images, graphs.clip_size).to(graphs.dtype))


def sam_pixels(images: torch.Tensor | list[torch.Tensor], size: int) -> torch.Tensor:
    """(B, 3, H, W) 0..255, or B images of any sizes -> (B, 3, size, size) SAM pixels."""
    device = images[0].device
    mean = torch.tensor(SAM_PIXEL_MEAN, dtype=torch.float32, device=device)
    std = torch.tensor(SAM_PIXEL_STD, dtype=torch.float32, device=device)
    return T.sam_batch(images, size, mean, std)


def sam_embedding(graphs: Graphs, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """(B, 3, H, W) 0..255, or B images of any sizes -> (B, C, h, w) SAM image embeddings."""
    pixels = sam_pixels(images, graphs.config.sam.image_size)
    return graphs.sam_encoder(pixels.to(graphs.dtype))


def encode_frame(graphs: Graphs, image: np.ndarray | torch.Tensor) -> FrameFeatures:
    """One camera frame (HxWx3 uint8) -> the features every round on it reuses."""
    img = T.to_tensor(image).to(graphs.device)
    return FrameFeatures(
        (int(img.shape[1]), int(img.shape[2])),
        image_tokens(graphs, img[None])[0],
        sam_embedding(graphs, img[None]),
    )


def reference_tokens(
    graphs: Graphs, image: torch.Tensor, masks: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Mask-encoding scheme: earlier masks (R, H, W) on ``image`` (3, H, W) -> (2R, hidden)
    tokens interleaved [mask_1, box_1, mask_2, ...]; ``keep`` (R,) bool is the training
    dropout draw when the caller makes it."""
    if masks.shape[0] == 0:
        return torch.zeros(0, graphs.hidden_size, device=image.device)
    crops, boxes = T.reference_inputs(image, masks, graphs.clip_size)
    tokens = graphs.encode_references(crops.to(graphs.dtype), boxes.to(graphs.dtype), keep)
    return tokens.reshape(-1, tokens.shape[-1])


def embed(
    graphs: Graphs,
    input_ids: torch.Tensor,
    image_tokens: torch.Tensor | None,
    ref_tokens: torch.Tensor | None,
) -> torch.Tensor:
    """Token embeddings (B, L, hidden) with the ``<image>`` and ``<ref>`` placeholders filled
    in order."""
    is_image = input_ids == graphs.image_token_id
    is_ref = input_ids == graphs.ref_token_id
    embeds = graphs.token_embeddings(input_ids.masked_fill(is_image | is_ref, 0))
    if is_image.any():
        embeds = embeds.masked_scatter(is_image[..., None], image_tokens.to(embeds.dtype))
    if is_ref.any():
        embeds = embeds.masked_scatter(is_ref[..., None], ref_tokens.to(embeds.dtype))
    return embeds
