"""The interface the engine runs a model through, whatever executes it.

The conversation logic (``segllm_ros.engine.engine``) is written once against ``Runtime``;
PyTorch (``torch_runtime``), ONNX Runtime and TensorRT (``graph_runtime``) implement it.
Tensors crossing it are torch tensors on ``Runtime.device``: preprocessing (resizes, crops)
stays in torch for every backend, and only the networks differ.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import numpy as np
import torch

from segllm_ros.model import transforms as T
from segllm_ros.model.config import SegLLMConfig
from segllm_ros.model.segllm import FrameFeatures

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class KVCache(Protocol):
    """The LLM's cache of one conversation prefix (``transformers.DynamicCache`` fits)."""

    def get_seq_length(self) -> int: ...

    def crop(self, max_length: int) -> None:
        """Called with a negative number only: drop that many tokens from the end (the one
        form every ``transformers`` version accepts)."""


class Runtime(ABC):
    """A SegLLM model as the engine needs it: frame encoders, reference encoder, token
    embeddings, one LLM step on a cache, the LM head, and the mask decoder."""

    config: SegLLMConfig
    tokenizer: Any
    device: torch.device
    backend: str

    def __init__(self, config: SegLLMConfig, tokenizer: Any, num_image_tokens: int,
                 clip_size: int) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.clip_size = clip_size
        ids = tokenizer.convert_tokens_to_ids
        self.image_token_id = ids(config.image_token)
        self.seg_token_id = ids(config.seg_token)
        self.ref_token_id = ids(config.ref_token)

    def encode_frame(self, image: np.ndarray) -> FrameFeatures:
        """One camera frame (HxWx3 uint8) -> the features every round on it reuses."""
        img = T.to_tensor(image).to(self.device)
        return FrameFeatures(img, self.image_tokens(T.clip_batch(img[None], self.clip_size))[0],
                             self.sam_embedding(img[None]))

    def reference_tokens(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Earlier masks (R, H, W) on ``image`` -> (2R, hidden) [mask, box] tokens."""
        crops, boxes = T.reference_inputs(image, masks, self.clip_size)
        tokens = self.encode_references(crops, boxes)
        return tokens.reshape(-1, tokens.shape[-1])

    @abstractmethod
    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP pixels (1, 3, S, S) -> (1, N, hidden)."""

    @abstractmethod
    def sam_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """Frames (1, 3, H, W) 0..255 -> SAM image embedding (1, C, h, w)."""

    @abstractmethod
    def encode_references(self, crops: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Masked-crop CLIP pixels (R, 3, S, S) + boxes (R, 4) -> (R, 2, hidden)."""

    @abstractmethod
    def embed(self, input_ids: torch.Tensor, image_tokens: torch.Tensor | None,
              ref_tokens: torch.Tensor | None) -> torch.Tensor:
        """Ids (1, L) -> input embeddings (1, L, hidden), placeholders filled."""

    @abstractmethod
    def new_cache(self) -> KVCache:
        """An empty KV cache for a new conversation prefix."""

    def release_cache(self, cache: KVCache) -> None:  # noqa: B027 - most caches hold nothing
        """A conversation's cache is no longer needed: give back what it holds (a static KV
        slot); dropping the reference is enough for other caches."""

    @abstractmethod
    def llm(self, inputs_embeds: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Feed (1, L, hidden) on top of ``cache`` (extended in place) -> last hidden states
        (1, L, hidden)."""

    @abstractmethod
    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, hidden) -> next-token logits (B, vocab)."""

    @abstractmethod
    def decode_masks(self, sam_embedding: torch.Tensor, seg_hidden: torch.Tensor,
                     turn_embeds: torch.Tensor, ref_masks: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``<seg>`` state (1, hidden) + turn embedding (1, hidden) + referenced masks in SAM
        input space (1, S, S) or None -> low-res target logits (1, 1, s, s), IoU (1, 1)."""

    @staticmethod
    @abstractmethod
    def cache_nbytes(cache: KVCache) -> int:
        """Bytes the cache holds (memory per live conversation)."""
