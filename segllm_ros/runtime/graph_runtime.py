"""A runtime over exported graphs (``manifest.GRAPHS``), whatever executes them: ONNX Runtime
sessions or TensorRT engines implement ``Session``; everything else is shared here."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from transformers import AutoTokenizer

from segllm_ros.model.config import SegLLMConfig
from segllm_ros.model.family import CONFIG_NAME
from segllm_ros.runtime.base import Runtime
from segllm_ros.runtime.manifest import Manifest

TORCH_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


class Session(Protocol):
    """One graph, ready to run: torch tensors in, torch tensors out (by name)."""

    input_names: list[str]

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


class GraphCache:
    """The LLM graph's past keys/values of one conversation prefix, in graph input order."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors

    def get_seq_length(self) -> int:
        return int(self.tensors[0].shape[2])

    def crop(self, max_length: int) -> None:
        if max_length >= 0:
            raise ValueError("crop takes a negative number of tokens to drop")
        keep = self.get_seq_length() + max_length
        self.tensors = [t[:, :, :keep].contiguous() for t in self.tensors]


class GraphRuntime(Runtime):
    """SegLLM on exported graphs; ``sessions`` maps graph names to ``Session``s. Inputs are
    handed over in fp32; each session casts them to its graph's input types."""

    dtype = torch.float32

    def __init__(
        self,
        checkpoint: str | Path,
        manifest: Manifest,
        sessions: dict[str, Session],
        backend: str,
        device: torch.device,
    ) -> None:
        config = SegLLMConfig.load(Path(checkpoint) / CONFIG_NAME)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=False)
        vision = manifest.graphs["vision"]
        super().__init__(
            config,
            tokenizer,
            int(vision.outputs[0].shape[1]),
            int(vision.inputs[0].shape[-1]),
            int(vision.outputs[0].shape[2]),
        )
        self.manifest = manifest
        self.sessions = sessions
        self.backend = backend
        self.device = device
        llm = manifest.graphs["llm"]
        self._past = [t for t in llm.inputs if t.name.startswith("past.")]
        self._dtypes = {
            g: {t.name: TORCH_DTYPES[t.dtype] for t in spec.inputs}
            for g, spec in manifest.graphs.items()
        }

    def _run(self, graph: str, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
        session = self.sessions[graph]
        dtypes = self._dtypes[graph]
        # An input the exporter pruned (e.g. ``ref_mask`` without the dense reference prompt)
        # is simply not fed.
        return session.run({name: feeds[name].to(dtypes[name]) for name in session.input_names})

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._run("vision", pixels=pixels)["image_tokens"]

    def sam_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._run("sam_encoder", pixels=pixels)["sam_embedding"]

    def encode_references(
        self, crops: torch.Tensor, boxes: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        if keep is not None:
            raise ValueError("the exported mask encoder is the inference graph: no dropout")
        return self._run("mask_encoder", crops=crops, boxes=boxes)["ref_tokens"]

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._run("token_embed", input_ids=input_ids)["embeds"]

    def new_cache(self) -> GraphCache:
        return GraphCache(
            [
                torch.zeros(
                    [0 if d == "past" else int(d) for d in t.shape],
                    dtype=TORCH_DTYPES[t.dtype],
                    device=self.device,
                )
                for t in self._past
            ]
        )

    def llm(self, inputs_embeds: torch.Tensor, cache: GraphCache) -> torch.Tensor:
        past = {t.name: v for t, v in zip(self._past, cache.tensors, strict=True)}
        out = self._run("llm", inputs_embeds=inputs_embeds, **past)
        cache.tensors = [out[t.name.replace("past.", "present.", 1)] for t in self._past]
        return out["hidden"]

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._run("lm_head", hidden=hidden)["logits"].float()

    def decode_masks(self, sam_embedding, seg_hidden, turn_embeds, ref_masks):
        if ref_masks is None:  # zeros add nothing to the dense prompt: same as no reference
            size = self.config.sam.image_size
            ref_masks = torch.zeros(1, size, size, device=self.device)
        out = self._run(
            "mask_decoder",
            sam_embedding=sam_embedding,
            seg_hidden=seg_hidden,
            turn_embeds=turn_embeds,
            ref_mask=ref_masks,
        )
        return out["low_res_logits"], out["iou"], out["plural"]

    @staticmethod
    def cache_nbytes(cache: GraphCache) -> int:
        return sum(t.numel() * t.element_size() for t in cache.tensors)
