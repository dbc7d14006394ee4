"""Conversation-aware SegLLM inference.

Each round: resolve which earlier rounds the query refers to, feed their masks back as
tokens (and as SAM's dense prompt), run the LLM on the new user turn only, decode the
``<seg>`` hidden state into a mask with SAM, record the round.

Cost stays flat over rounds: the LLM's KV cache holds the conversation so far and the
per-frame features (CLIP tokens, SAM embedding) are kept in a small LRU. ``mode="recompute"``
rebuilds everything from the history every round (the upstream behaviour), to prove the
cached path gives the same result.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from segllm_ros.engine.conversation import Conversation, ConversationStore, Frame, Round
from segllm_ros.engine.references import resolve_references
from segllm_ros.model import transforms as T
from segllm_ros.model.processing import FrameFeatures
from segllm_ros.model.segllm import SegLLMModel
from segllm_ros.model.template import RoundTokens, tokenize_round
from segllm_ros.runtime.base import KVCache, Runtime
from segllm_ros.runtime.registry import load_runtime
from segllm_ros.runtime.torch_runtime import TorchRuntime

MODES = ("cached", "recompute")


class RoundCancelled(Exception):
    """The caller cancelled the round between two stages; nothing was recorded."""


@dataclass
class EngineConfig:
    mode: str = "cached"
    generate_text: bool = False     # generate the answer text (else the model's seg answer)
    max_new_tokens: int = 32
    mask_threshold: float = 0.0     # on mask logits
    max_refs: int = 4
    blank_references: bool = False  # ablation: references resolved but their input zeroed
    frame_cache_size: int = 8       # frames whose CLIP/SAM features are kept

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass
class RoundResult:
    conversation_id: str
    round_index: int
    query: str
    text: str
    ref_rounds: list[int]
    found: bool
    mask: np.ndarray                # bool HxW at the frame's resolution
    box: tuple[int, int, int, int] | None
    score: float
    frame: Frame
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class _Runtime:
    """What the engine keeps per conversation between rounds (``Conversation.runtime``)."""

    cache: KVCache
    rounds: int                     # rounds already in the cache
    ref_tokens: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class _SegState:
    """What the LLM hands the mask decoder for one ``<seg>``: its hidden state and the mean
    input embedding of the round's query (both (1, H))."""

    hidden: torch.Tensor
    turn_embeds: torch.Tensor


class SegLLMEngine:
    """The conversation logic, written once for every backend (``Runtime``)."""

    def __init__(self, model: SegLLMModel | Runtime, config: EngineConfig | None = None,
                 store: ConversationStore | None = None) -> None:
        self.runtime = TorchRuntime(model) if isinstance(model, SegLLMModel) else model
        self.config = config or EngineConfig()
        self.store = store or ConversationStore()
        self._features: OrderedDict[str, FrameFeatures] = OrderedDict()

    @property
    def model(self) -> SegLLMModel:
        """The torch model (torch backend only)."""
        if not isinstance(self.runtime, TorchRuntime):
            raise AttributeError(f"the {self.runtime.backend} backend has no torch model")
        return self.runtime.model

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def history_nbytes(self, conversation_id: str) -> dict[str, int]:
        """Bytes a live conversation keeps between rounds: its recorded history (RLE masks,
        texts, frames), and the engine's state for it (KV cache, reference tokens)."""
        conv = self.store.get(conversation_id)
        sizes = {"history": 0, "kv_cache": 0, "ref_tokens": 0}
        if conv is None:
            return sizes
        sizes["history"] = conv.history_bytes()
        if isinstance(conv.runtime, _Runtime):
            sizes["kv_cache"] = self.runtime.cache_nbytes(conv.runtime.cache)
            sizes["ref_tokens"] = sum(t.numel() * t.element_size()
                                      for t in conv.runtime.ref_tokens.values())
        return sizes

    # ----------------------------------------------------------------- public
    @torch.inference_mode()
    def segment(self, conversation_id: str, query: str, frame: Frame,
                ref_rounds: list[int] | tuple[int, ...] = (),
                on_stage: Callable[[str], None] | None = None,
                should_cancel: Callable[[], bool] | None = None) -> RoundResult:
        """Run one round. Raises ``BadReferenceError`` for references to rounds that do not
        exist, ``ConversationFullError`` at the round limit, ``RoundCancelled`` when
        ``should_cancel`` turns true; any failure leaves the conversation as it was."""

        def stage(name: str) -> None:
            if should_cancel is not None and should_cancel():
                raise RoundCancelled(f"cancelled before {name}")
            if on_stage is not None:
                on_stage(name)

        t0 = time.perf_counter()
        conv = self.store.get_or_create(conversation_id)
        refs = resolve_references(query, list(ref_rounds), conv.num_rounds, self.config.max_refs)
        conv.ensure_room()
        try:
            stage("encoding_image")
            feats = self._frame_features(frame)
            pinned_frame = conv.pinned_frame
            pinned = (feats if pinned_frame is None or pinned_frame.key == frame.key
                      else self._frame_features(pinned_frame))
            t1 = time.perf_counter()
            stage("reasoning")
            answer, seg = self._run_llm(conv, query, refs, pinned)
            t2 = time.perf_counter()
            stage("decoding_mask")
            mask, score = self._decode(conv, seg, refs, feats)
            if should_cancel is not None and should_cancel():  # cancel wins until recorded
                raise RoundCancelled("cancelled before the round was recorded")
        except BaseException:
            conv.invalidate_runtime()  # the KV cache may hold a half-fed round
            raise
        t3 = time.perf_counter()
        found = mask is not None and bool(mask.any())
        rnd = Round.from_mask(conv.num_rounds + 1, query, answer, refs,
                              mask if found else None, score, frame)
        conv.add_round(rnd, frame)
        if isinstance(conv.runtime, _Runtime):
            conv.runtime.rounds = conv.num_rounds
        full = mask if mask is not None else np.zeros((frame.height, frame.width), bool)
        return RoundResult(conversation_id, rnd.index, query, answer, refs, found, full,
                           rnd.box, score, frame,
                           {"image": (t1 - t0) * 1e3, "llm": (t2 - t1) * 1e3,
                            "mask": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3})

    def reset(self, conversation_id: str = "") -> int:
        """Clear one conversation (or all when ``conversation_id`` is empty); returns how
        many were cleared."""
        if not conversation_id:
            return self.store.reset_all()
        return int(self.store.reset(conversation_id))

    # --------------------------------------------------------------- features
    def _frame_features(self, frame: Frame) -> FrameFeatures:
        if self.config.mode == "recompute":
            return self.runtime.encode_frame(frame.image)
        feats = self._features.get(frame.key)
        if feats is None:
            feats = self.runtime.encode_frame(frame.image)
            self._features[frame.key] = feats
            while len(self._features) > self.config.frame_cache_size:
                self._features.popitem(last=False)
        self._features.move_to_end(frame.key)
        return feats

    def _reference_tokens(self, conv: Conversation, k: int) -> torch.Tensor:
        """Mask + box token of round k's output on the frame it was answered on."""
        runtime = conv.runtime if self.config.mode == "cached" else None
        if isinstance(runtime, _Runtime) and k in runtime.ref_tokens:
            return runtime.ref_tokens[k]
        image = T.to_tensor(conv.frame_of(k).image).to(self.device)
        mask = torch.from_numpy(conv.round(k).mask()).to(self.device)
        tokens = self.runtime.reference_tokens(image, mask[None])
        if self.config.blank_references:
            tokens = torch.zeros_like(tokens)
        if isinstance(runtime, _Runtime):
            runtime.ref_tokens[k] = tokens
        return tokens

    # ------------------------------------------------------------------- LLM
    def _round_tokens(self, query: str, answer: str | None, num_refs: int, first: bool
                      ) -> RoundTokens:
        rt = self.runtime
        return tokenize_round(rt.tokenizer, rt.config, query, answer, num_refs, first,
                              rt.num_image_tokens)

    def _feed(self, ids: list[int], refs: list[torch.Tensor], image_tokens: torch.Tensor,
              cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ids through the LLM on top of ``cache``; returns the hidden states and the
        input embeddings of the fed ids, both (L, H)."""
        input_ids = torch.tensor([ids], device=self.device)
        ref = torch.cat(refs) if refs else None
        embeds = self.runtime.embed(input_ids, image_tokens, ref)
        hidden = self.runtime.llm(embeds, cache)
        return hidden[0], embeds[0]

    def _prefill(self, conv: Conversation, pinned: FrameFeatures) -> _Runtime:
        """A fresh KV cache holding every recorded round (used by recompute, and by the
        cached mode after a restart or a failed round)."""
        runtime = _Runtime(self.runtime.new_cache(), 0)
        if self.config.mode == "cached":
            conv.runtime = runtime
        ids: list[int] = []
        refs: list[torch.Tensor] = []
        for rnd in conv.rounds:
            ids += self._round_tokens(rnd.query, rnd.answer, len(rnd.ref_rounds),
                                      rnd.index == 1).ids
            refs += [self._reference_tokens(conv, k) for k in rnd.ref_rounds]
        if ids:
            self._feed(ids, refs, pinned.image_tokens, runtime.cache)
        runtime.rounds = conv.num_rounds
        return runtime

    def _run_llm(self, conv: Conversation, query: str, refs: list[int],
                 pinned: FrameFeatures) -> tuple[str, _SegState | None]:
        """Feed this round (user turn + answer) and return the answer text and the state of
        its ``<seg>`` token (None when the answer has none)."""
        runtime = conv.runtime
        if (self.config.mode == "recompute" or not isinstance(runtime, _Runtime)
                or runtime.rounds != conv.num_rounds):
            runtime = self._prefill(conv, pinned)
        first = conv.num_rounds == 0
        ref_tokens = [self._reference_tokens(conv, k) for k in refs]
        answer = self.runtime.config.seg_answer
        if self.config.generate_text:
            answer = self._generate(conv, query, ref_tokens, first, pinned, runtime.cache)
        rt = self._round_tokens(query, answer, len(refs), first)
        hidden, embeds = self._feed(rt.ids, ref_tokens, pinned.image_tokens, runtime.cache)
        seg = [i for i, t in enumerate(rt.answer_ids) if t == self.runtime.seg_token_id]
        if not seg:
            return answer, None
        start, end = rt.query_span
        return answer, _SegState(hidden[len(rt.user_ids) + seg[0]][None],
                                 embeds[start:end].mean(0, keepdim=True))

    def _generate(self, conv: Conversation, query: str, ref_tokens: list[torch.Tensor],
                  first: bool, pinned: FrameFeatures, cache: KVCache) -> str:
        """Greedy answer, one token at a time on the conversation's cache (any backend); the
        cache is then cropped back so the answer is fed once more, exactly like a fixed
        answer."""
        rt = self._round_tokens(query, None, len(ref_tokens), first)
        start = cache.get_seq_length()
        tok = self.runtime.tokenizer
        hidden, _ = self._feed(rt.user_ids, ref_tokens, pinned.image_tokens, cache)
        new: list[int] = []
        for _ in range(self.config.max_new_tokens):
            token = int(self.runtime.lm_logits(hidden[-1:]).argmax(-1)[0])
            if token == tok.eos_token_id:
                break
            new.append(token)
            hidden, _ = self._feed([token], [], pinned.image_tokens, cache)
        extra = cache.get_seq_length() - start
        if extra:
            cache.crop(-extra)  # negative = drop that many tokens (all transformers versions)
        return tok.decode(new, skip_special_tokens=False).strip()

    # ------------------------------------------------------------------- SAM
    def _decode(self, conv: Conversation, seg: _SegState | None, refs: list[int],
                feats: FrameFeatures) -> tuple[np.ndarray | None, float]:
        if seg is None:
            return None, 0.0
        size = self.runtime.config.sam.image_size
        dense = None
        if refs and not self.config.blank_references:
            masks = torch.stack([self._mask_on(conv, k, feats.hw) for k in refs]).float()
            dense = (T.resize_to_input_frame(masks, feats.hw, size) > 0.5).any(0)[None]
        low, iou = self.runtime.decode_masks(feats.sam_embedding, seg.hidden, seg.turn_embeds,
                                             dense)
        logits = T.postprocess_masks(low.float(), feats.hw, size)[0]
        return (logits > self.config.mask_threshold).cpu().numpy(), float(iou[0, 0])

    def _mask_on(self, conv: Conversation, k: int, hw: tuple[int, int]) -> torch.Tensor:
        """Round k's mask at the current frame's size (frames of a conversation may differ)."""
        mask = torch.from_numpy(conv.round(k).mask()).to(self.device)
        if tuple(mask.shape) != hw:
            mask = torch.nn.functional.interpolate(mask[None, None].float(), size=hw)[0, 0] > 0.5
        return mask


def load_engine(model_path: str, device: str = "cpu", backend: str = "torch",
                precision: str = "fp32", engine_dir: str = "", **config: Any) -> SegLLMEngine:
    """The engine for a checkpoint folder; ``backend`` selects the runtime."""
    runtime = load_runtime(model_path, device, backend, precision, engine_dir)
    store_keys = {"max_conversations", "max_rounds", "ttl_s"}
    store = ConversationStore(**{k: config.pop(k) for k in list(config) if k in store_keys})
    return SegLLMEngine(runtime, EngineConfig(**config), store)
