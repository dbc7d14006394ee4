"""The PyTorch runtime: the ``SegLLMModel`` itself, with a ``transformers`` KV cache."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from segllm_ros.model.segllm import FrameFeatures, SegLLMModel
from segllm_ros.runtime.base import Runtime


class TorchRuntime(Runtime):
    backend = "torch"

    def __init__(self, model: SegLLMModel) -> None:
        self.model = model.eval()
        super().__init__(model.config, model.tokenizer, model.num_image_tokens,
                         model.vision_tower.config.image_size)

    @property
    def device(self) -> torch.device:
        return self.model.box_encoder.weight.device

    def encode_frame(self, image) -> FrameFeatures:
        return self.model.encode_frame(image)

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.vision_tokens(pixels.to(self.model.dtype))

    def sam_embedding(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.sam_embedding(images)

    def reference_tokens(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.model.reference_tokens(image, masks)

    def encode_references(self, crops: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.model.encode_references(crops.to(self.model.dtype),
                                            boxes.to(self.model.dtype))

    def embed(self, input_ids, image_tokens, ref_tokens) -> torch.Tensor:
        return self.model.embed(input_ids, image_tokens, ref_tokens)

    def new_cache(self) -> DynamicCache:
        return DynamicCache()

    def llm(self, inputs_embeds: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        return self.model.llm_hidden(inputs_embeds, past_key_values=cache).last_hidden_state

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.llm.get_output_embeddings()(hidden).float()

    def decode_masks(self, sam_embedding, seg_hidden, turn_embeds, ref_masks):
        return self.model.decode_from_seg(sam_embedding, seg_hidden, turn_embeds, ref_masks)

    @staticmethod
    def cache_nbytes(cache: DynamicCache) -> int:
        return sum(t.numel() * t.element_size() for layer in cache.layers
                   for t in (layer.keys, layer.values) if t is not None)
