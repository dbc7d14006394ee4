"""The interface the engine runs a model through, whatever executes it.

The conversation logic (``segllm_ros.engine.engine``) is written once against ``Runtime``;
PyTorch (``torch_runtime``), ONNX Runtime and TensorRT (``graph_runtime``) implement its
graphs. Tensors crossing it are torch tensors on ``Runtime.device``; what runs around the
graphs (resizes, crops, placeholder filling) is ``segllm_ros.model.processing``, the same code
the torch model's ``forward`` uses, so the backends differ only in what executes the graphs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import torch

from segllm_ros.model import processing as P
from segllm_ros.model import template as vicuna_template
from segllm_ros.model.config import SegLLMConfig
from segllm_ros.model.processing import FrameFeatures
from segllm_ros.model.template import RoundTokens


class KVCache(Protocol):
    """The LLM's cache of one conversation prefix (``transformers.DynamicCache`` fits)."""

    def get_seq_length(self) -> int: ...

    def crop(self, max_length: int) -> None:
        """Called with a negative number only: drop that many tokens from the end (the one
        form every ``transformers`` version accepts)."""


class Runtime(ABC):
    """A SegLLM model as the engine needs it: frame features, reference tokens, token
    embeddings (shared code, ``processing``), and the graphs behind them (``processing.Graphs``)
    plus one LLM step on a cache, the LM head and the mask decoder (per backend)."""

    config: SegLLMConfig
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    backend: str
    # The model family's pre/post-processing and prompt format: modules with the functions of
    # ``segllm_ros.model.processing`` / ``segllm_ros.model.template`` (segllm-sam's).
    processing: ModuleType = P
    template: ModuleType = vicuna_template

    def __init__(
        self,
        config: SegLLMConfig,
        tokenizer: Any,
        num_image_tokens: int,
        clip_size: int,
        hidden_size: int,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.clip_size = clip_size
        self.hidden_size = hidden_size
        ids = tokenizer.convert_tokens_to_ids
        self.image_token_id = ids(config.image_token)
        self.seg_token_id = ids(config.seg_token)
        self.ref_token_id = ids(config.ref_token)
        self.input_size = self.processing.input_size(config)

    def encode_frame(self, image: np.ndarray) -> FrameFeatures:
        """One camera frame (HxWx3 uint8) -> the features every round on it reuses."""
        return self.processing.encode_frame(self, image)

    def reference_tokens(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Earlier masks (R, H, W) on ``image`` -> (2R, hidden) [mask, box] tokens."""
        return self.processing.reference_tokens(self, image, masks)

    def tokenize_round(
        self, query: str, answer: str | None, num_refs: int, first: bool
    ) -> RoundTokens:
        """Token ids of one round in the family's prompt format."""
        return self.template.tokenize_round(
            self.tokenizer, self.config, query, answer, num_refs, first, self.num_image_tokens
        )

    def embed(
        self,
        input_ids: torch.Tensor,
        image_tokens: torch.Tensor | None,
        ref_tokens: torch.Tensor | None,
    ) -> torch.Tensor:
        """Ids (1, L) -> input embeddings (1, L, hidden), placeholders filled."""
        return self.processing.embed(self, input_ids, image_tokens, ref_tokens)

    @abstractmethod
    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP pixels (1, 3, S, S) -> (1, N, hidden)."""

    @abstractmethod
    def sam_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        """SAM pixels (1, 3, S, S) -> SAM image embedding (1, C, h, w)."""

    @abstractmethod
    def encode_references(
        self, crops: torch.Tensor, boxes: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Masked-crop CLIP pixels (R, 3, S, S) + boxes (R, 4) -> (R, 2, hidden); runtimes
        run inference, where ``keep`` (a training dropout draw) is None."""

    @abstractmethod
    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Ids (1, L) -> the LLM's input embeddings (1, L, hidden)."""

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
    def decode_masks(
        self,
        sam_embedding: torch.Tensor,
        seg_hidden: torch.Tensor,
        turn_embeds: torch.Tensor,
        ref_masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``<seg>`` state (1, hidden) + turn embedding (1, hidden) + referenced masks in SAM
        input space (1, S, S) or None -> low-res logits of the N instance slots
        (1, N, s, s), their IoU = presence (1, N), plural logit (1, 1)."""

    @staticmethod
    @abstractmethod
    def cache_nbytes(cache: KVCache) -> int:
        """Bytes the cache holds (memory per live conversation)."""
