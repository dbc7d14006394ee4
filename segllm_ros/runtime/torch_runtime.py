"""The PyTorch runtime: the ``SegLLMModel`` itself, with a ``transformers`` KV cache (dynamic,
or static slots replayable as CUDA graphs: ``static_cache``), its encoders and mask decoder
eager or compiled (``compiled``)."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from segllm_ros.model.family import load_pretrained
from segllm_ros.model.quantize import QUANT_SCHEMES, quantize_llm
from segllm_ros.model.segllm import SegLLMModel
from segllm_ros.runtime.base import KVCache, Runtime
from segllm_ros.runtime.compiled import GraphSet, compile_and_warm_up
from segllm_ros.runtime.precision import torch_dtype
from segllm_ros.runtime.static_cache import SlotCache, StaticCacheConfig, StaticCachePool


class TorchRuntime(Runtime):
    backend = "torch"

    def __init__(
        self,
        model: SegLLMModel,
        static_cache: StaticCacheConfig | None = None,
        compiled: bool = False,
        compile_cache_dir: str = "",
    ) -> None:
        """``compiled``: the encoders and mask decoder through ``torch.compile``, compiled and
        warmed up here (cost in ``compile_report``), cached in ``compile_cache_dir``."""
        self.model = model.eval()
        self.processing, self.template = model.processing, model.template
        super().__init__(
            model.config,
            model.tokenizer,
            model.num_image_tokens,
            model.clip_size,
            model.hidden_size,
        )
        self.static_cache = (
            None
            if static_cache is None
            else StaticCachePool(static_cache, model.llm.config, self._decoder_step, self.device)
        )
        self.graphs, self.compile_report = (
            compile_and_warm_up(model, compile_cache_dir)
            if compiled
            else (GraphSet.eager(model), None)
        )

    def _decoder_step(self, inputs_embeds: torch.Tensor, cache, cache_position) -> torch.Tensor:
        return self.model.llm_hidden(
            inputs_embeds, past_key_values=cache, cache_position=cache_position
        ).last_hidden_state

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.graphs.vision_tokens(pixels)

    def sam_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.graphs.sam_encoder(pixels)

    def encode_references(
        self, crops: torch.Tensor, boxes: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.model.encode_references(crops, boxes, keep)

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.token_embeddings(input_ids)

    def new_cache(self) -> KVCache:
        return DynamicCache() if self.static_cache is None else self.static_cache.acquire()

    def release_cache(self, cache: KVCache) -> None:
        if isinstance(cache, SlotCache):
            self.static_cache.release(cache)

    def llm(self, inputs_embeds: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if isinstance(cache, SlotCache):
            return self.static_cache.feed(inputs_embeds, cache)
        return self._decoder_step(inputs_embeds, cache, None)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden).float()

    def decode_masks(self, sam_embedding, seg_hidden, turn_embeds, ref_masks):
        return self.graphs.decode_masks(sam_embedding, seg_hidden, turn_embeds, ref_masks)

    @staticmethod
    def cache_nbytes(cache: KVCache) -> int:
        if isinstance(cache, SlotCache):
            return cache.nbytes()
        return sum(
            t.numel() * t.element_size()
            for layer in cache.layers
            for t in (layer.keys, layer.values)
            if t is not None
        )


def load_torch(
    checkpoint: str,
    device: str = "cpu",
    precision: str = "fp32",
    llm_quant: str = "none",
    llm_graphs: bool = False,
    compile_graphs: bool = False,
    compile_cache_dir: str = "",
) -> TorchRuntime:
    """The checkpoint's model (of its family) on ``device`` in ``precision``; ``llm_quant``
    quantises the LLM's weights (``segllm_ros.model.quantize``), ``llm_graphs`` gives
    conversations static KV slots, replayed as CUDA graphs on a GPU (``static_cache``),
    ``compile_graphs`` compiles the encoders and mask decoder (``compiled``)."""
    dtype = torch_dtype(precision)  # a bad name fails before the weights are read
    if llm_quant not in QUANT_SCHEMES:
        raise ValueError(f"llm_quant must be one of {QUANT_SCHEMES}, got {llm_quant!r}")
    model = quantize_llm(load_pretrained(checkpoint, device=device).to_precision(dtype), llm_quant)
    return TorchRuntime(
        model,
        StaticCacheConfig(graphs=True) if llm_graphs else None,
        compiled=compile_graphs,
        compile_cache_dir=compile_cache_dir,
    )
