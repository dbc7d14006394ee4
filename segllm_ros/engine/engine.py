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

from segllm_ros.engine.answers import AMBIGUOUS, NONE, ONE, Segment, answer_kind, reading_order
from segllm_ros.engine.answers import union as union_mask
from segllm_ros.engine.clarify import clarifying_question, resolve_clarification
from segllm_ros.engine.frames import check_frame, history_frame, resize_mask
from segllm_ros.engine.history import Conversation, Frame, Round
from segllm_ros.engine.persistence import ConversationArchive
from segllm_ros.engine.references import DEFAULT_MAX_REFS, BadReferenceError, resolve_references
from segllm_ros.engine.store import ConversationStore
from segllm_ros.interface.mask_codec import mask_to_box
from segllm_ros.model import transforms as T
from segllm_ros.model.processing import FrameFeatures
from segllm_ros.model.segllm import SegLLMModel
from segllm_ros.model.template import RoundTokens
from segllm_ros.runtime.base import KVCache, Runtime
from segllm_ros.runtime.registry import load_runtime
from segllm_ros.runtime.torch_runtime import TorchRuntime

MODES = ("cached", "recompute")


class RoundCancelled(Exception):
    """The caller cancelled the round between two stages; nothing was recorded."""


@dataclass
class EngineConfig:
    mode: str = "cached"
    generate_text: bool = False  # generate the answer text (else the model's seg answer)
    max_new_tokens: int = 32
    mask_threshold: float = 0.0  # on mask logits
    # Multi-segment models: an instance slot is part of the answer when its predicted IoU
    # (presence score) reaches this.
    presence_threshold: float = 0.5
    max_refs: int = DEFAULT_MAX_REFS
    blank_references: bool = False  # ablation: references resolved but their input zeroed
    frame_cache_size: int = 8  # frames whose CLIP/SAM features are kept
    # Longest side of the frames kept in a conversation's history (for reference tokens and
    # re-prefills); larger frames are downscaled when recorded. 0 = the SAM input size.
    history_max_side: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass
class RoundResult:
    """One round's answer: its kind and objects (``segments``, reading order); ``mask`` is
    their union, ``score`` the first one's; ``text`` the answer, for AMBIGUOUS the question
    that tells the candidates apart."""

    conversation_id: str
    round_index: int
    query: str
    text: str
    ref_rounds: list[int]
    found: bool
    mask: np.ndarray  # bool HxW at the frame's resolution
    box: tuple[int, int, int, int] | None
    score: float
    frame: Frame
    timings_ms: dict[str, float] = field(default_factory=dict)
    kind: str = ONE
    segments: list[Segment] = field(default_factory=list)


@dataclass
class ConversationCache:
    """What the engine keeps per live conversation between rounds: the LLM's KV cache of
    the rounds so far and the reference tokens of earlier outputs. Valid only for the
    conversation object it was built for, at ``rounds`` rounds."""

    conversation: Conversation
    kv: KVCache
    rounds: int = 0
    ref_tokens: dict[int, torch.Tensor] = field(default_factory=dict)

    def is_current(self, conv: Conversation) -> bool:
        return self.conversation is conv and self.rounds == conv.num_rounds


@dataclass(frozen=True)
class _SegState:
    """What the LLM hands the mask decoder for one ``<seg>``: its hidden state and the mean
    input embedding of the round's query (both (1, H))."""

    hidden: torch.Tensor
    turn_embeds: torch.Tensor


class SegLLMEngine:
    """The conversation logic, written once for every backend (``Runtime``)."""

    def __init__(
        self,
        model: SegLLMModel | Runtime,
        config: EngineConfig | None = None,
        store: ConversationStore | None = None,
    ) -> None:
        self.runtime = TorchRuntime(model) if isinstance(model, SegLLMModel) else model
        self.config = config or EngineConfig()
        # ``is None``, not ``or``: an empty store has len 0 and is falsy.
        self.store = ConversationStore() if store is None else store
        self.store.on_drop(self._drop_cache)
        self._caches: dict[str, ConversationCache] = {}
        self._features: OrderedDict[tuple[str, int, int], FrameFeatures] = OrderedDict()

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
        texts, frames), and the engine's cache for it (KV cache, reference tokens)."""
        conv = self.store.get(conversation_id)
        sizes = {"history": 0, "kv_cache": 0, "ref_tokens": 0}
        if conv is None:
            return sizes
        sizes["history"] = conv.history_bytes()
        cache = self._caches.get(conversation_id)
        if cache is not None:
            sizes["kv_cache"] = self.runtime.cache_nbytes(cache.kv)
            sizes["ref_tokens"] = sum(
                t.numel() * t.element_size() for t in cache.ref_tokens.values()
            )
        return sizes

    # ----------------------------------------------------------------- public
    @torch.inference_mode()
    def segment(
        self,
        conversation_id: str,
        query: str,
        frame: Frame,
        ref_rounds: list[int] | tuple[int, ...] = (),
        reset_before: bool = False,
        on_stage: Callable[[str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> RoundResult:
        """Run one round (after ending the conversation when ``reset_before``).

        Everything that can refuse the query is checked before any state changes: raises
        ``BadReferenceError`` for references to rounds that do not exist (naming how the
        conversation ended when it did), ``ConversationFullError`` at the round limit,
        ``UnsupportedFrameError`` for a frame the model cannot take, ``RoundCancelled`` when
        ``should_cancel`` turns true; any failure leaves the conversation as it was.
        """

        def stage(name: str) -> None:
            if should_cancel is not None and should_cancel():
                raise RoundCancelled(f"cancelled before {name}")
            if on_stage is not None:
                on_stage(name)

        t0 = time.perf_counter()
        check_frame(frame, self.runtime.input_size)
        live = None if reset_before else self.store.get(conversation_id)
        conv = live if live is not None else self.store.new_conversation(conversation_id)
        refs = self._resolve(conv, query, ref_rounds)
        chosen = self._clarified(conv, query)
        conv.ensure_room()
        if reset_before:
            self.store.reset(conversation_id)
        try:
            stage("encoding_image")
            feats = self._frame_features(frame)
            pinned_frame = conv.pinned_frame
            same = pinned_frame is None or (pinned_frame.key, pinned_frame.image.shape) == (
                frame.key,
                frame.image.shape,
            )
            pinned = feats if same else self._frame_features(pinned_frame)
            t1 = time.perf_counter()
            stage("reasoning")
            answer, seg, cache = self._run_llm(conv, query, refs, pinned)
            t2 = time.perf_counter()
            stage("decoding_mask")
            if chosen is not None:
                segments, plural = [self._on_frame(chosen, frame)], False
            else:
                segments, plural = self._decode(conv, seg, refs, feats)
            if should_cancel is not None and should_cancel():  # cancel wins until recorded
                raise RoundCancelled("cancelled before the round was recorded")
        except BaseException:
            self._drop_cache(conversation_id)  # the KV cache may hold a half-fed round
            raise
        t3 = time.perf_counter()
        kind = answer_kind(len(segments), plural)
        full = union_mask(segments, (frame.height, frame.width))
        kept = history_frame(frame, self.config.history_max_side or self.runtime.input_size)
        rnd = Round.from_segments(
            conv.num_rounds + 1,
            query,
            answer,
            refs,
            [self._on_frame(s, kept) for s in segments],
            kind,
            kept,
        )
        self.store.add_round(conv, rnd, kept)
        if cache is not None:
            cache.rounds = conv.num_rounds
        text = answer
        if kind == AMBIGUOUS:
            text = clarifying_question(query, [s.box for s in segments])
        return RoundResult(
            conversation_id,
            rnd.index,
            query,
            text,
            refs,
            kind != NONE,
            full,
            mask_to_box(full) if segments else None,
            segments[0].score if segments else 0.0,
            frame,
            {
                "image": (t1 - t0) * 1e3,
                "llm": (t2 - t1) * 1e3,
                "mask": (t3 - t2) * 1e3,
                "total": (t3 - t0) * 1e3,
            },
            kind,
            segments,
        )

    def correct_last_round(self, conversation_id: str, mask: np.ndarray) -> None:
        """Replace the mask the last round recorded (an operator's correction, or the ground
        truth in the evaluation's ground-truth-history protocol); later rounds then refer to
        the corrected mask. The conversation's cache is rebuilt on its next round."""
        conv = self.store.get(conversation_id)
        if conv is None or conv.num_rounds == 0:
            raise BadReferenceError(f"conversation {conversation_id!r} has no round to correct")
        last = conv.rounds[-1]
        frame = conv.frames[last.frame_key]
        mask = resize_mask(np.asarray(mask, dtype=bool), frame)
        self.store.replace_last_round(
            conversation_id,
            Round.from_mask(
                last.index, last.query, last.answer, last.ref_rounds, mask, last.score, frame
            ),
        )
        self._drop_cache(conversation_id)

    def reset(self, conversation_id: str = "") -> int:
        """End one conversation (all when ``conversation_id`` is empty), its saved state and
        caches included; returns how many ended."""
        return self.store.reset(conversation_id)

    # -------------------------------------------------------------- checking
    @staticmethod
    def _clarified(conv: Conversation, query: str) -> Segment | None:
        """The candidate a reply picks when the last round asked which one was meant
        ("the left one", "the second one", "<candidate 2>"); None for any other query.
        Raises ``BadReferenceError`` for a candidate number that was not offered."""
        if conv.num_rounds == 0 or conv.rounds[-1].kind != AMBIGUOUS:
            return None
        candidates = conv.rounds[-1].answer_segments()
        index = resolve_clarification(query, [c.box for c in candidates])
        return None if index is None else candidates[index]

    def _resolve(
        self, conv: Conversation, query: str, ref_rounds: list[int] | tuple[int, ...]
    ) -> list[int]:
        """The rounds the query refers to; a reference into a conversation that ended says
        so instead of "round 1 does not exist"."""
        try:
            return resolve_references(
                query, list(ref_rounds), conv.num_rounds, self.config.max_refs
            )
        except BadReferenceError as exc:
            how = self.store.why_gone(conv.id) if conv.num_rounds == 0 else None
            if how is None:
                raise
            raise BadReferenceError(
                f"conversation {conv.id!r} was {how}: its earlier rounds are gone ({exc})"
            ) from exc

    # --------------------------------------------------------------- caches
    def _drop_cache(self, conversation_id: str) -> None:
        cache = self._caches.pop(conversation_id, None)
        if cache is not None:
            self.runtime.release_cache(cache.kv)

    def _frame_features(self, frame: Frame) -> FrameFeatures:
        if self.config.mode == "recompute":
            return self.runtime.encode_frame(frame.image)
        # A history copy shares its camera frame's key at a smaller size: key on both.
        key = (frame.key, frame.height, frame.width)
        feats = self._features.get(key)
        if feats is None:
            feats = self.runtime.encode_frame(frame.image)
            self._features[key] = feats
            while len(self._features) > self.config.frame_cache_size:
                self._features.popitem(last=False)
        self._features.move_to_end(key)
        return feats

    def _reference_tokens(
        self, conv: Conversation, k: int, cache: ConversationCache | None
    ) -> torch.Tensor:
        """Mask + box token of round k's output on the frame it was answered on."""
        if cache is not None and k in cache.ref_tokens:
            return cache.ref_tokens[k]
        image = T.to_tensor(conv.frame_of(k).image).to(self.device)
        mask = torch.from_numpy(conv.round(k).mask()).to(self.device)
        tokens = self.runtime.reference_tokens(image, mask[None])
        if self.config.blank_references:
            tokens = torch.zeros_like(tokens)
        if cache is not None:
            cache.ref_tokens[k] = tokens
        return tokens

    # ------------------------------------------------------------------- LLM
    def _round_tokens(
        self, query: str, answer: str | None, num_refs: int, first: bool
    ) -> RoundTokens:
        return self.runtime.tokenize_round(query, answer, num_refs, first)

    def _feed(
        self, ids: list[int], refs: list[torch.Tensor], image_tokens: torch.Tensor, cache: KVCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ids through the LLM on top of ``cache``; returns the hidden states and the
        input embeddings of the fed ids, both (L, H)."""
        input_ids = torch.tensor([ids], device=self.device)
        ref = torch.cat(refs) if refs else None
        embeds = self.runtime.embed(input_ids, image_tokens, ref)
        hidden = self.runtime.llm(embeds, cache)
        return hidden[0], embeds[0]

    def _prefill(self, conv: Conversation, pinned: FrameFeatures) -> ConversationCache:
        """A fresh cache holding every recorded round (used by recompute, and by the cached
        mode after a restart or a failed round); kept by the engine in cached mode."""
        keep = self.config.mode == "cached"
        if keep:
            self._drop_cache(conv.id)
        cache = ConversationCache(conv, self.runtime.new_cache())
        ids: list[int] = []
        refs: list[torch.Tensor] = []
        for rnd in conv.rounds:
            ids += self._round_tokens(
                rnd.query, rnd.answer, len(rnd.ref_rounds), rnd.index == 1
            ).ids
            refs += [
                self._reference_tokens(conv, k, cache if keep else None) for k in rnd.ref_rounds
            ]
        if ids:
            self._feed(ids, refs, pinned.image_tokens, cache.kv)
        cache.rounds = conv.num_rounds
        if keep:
            self._caches[conv.id] = cache
        return cache

    def _run_llm(
        self, conv: Conversation, query: str, refs: list[int], pinned: FrameFeatures
    ) -> tuple[str, _SegState | None, ConversationCache | None]:
        """Feed this round (user turn + answer) and return the answer text, the state of its
        ``<seg>`` token (None when the answer has none) and the engine's cache (None in
        recompute mode)."""
        cache = self._caches.get(conv.id) if self.config.mode == "cached" else None
        if cache is None or not cache.is_current(conv):
            cache = self._prefill(conv, pinned)
        try:
            return self._feed_round(conv, query, refs, pinned, cache)
        finally:
            if self.config.mode == "recompute":
                self.runtime.release_cache(cache.kv)  # rebuilt every round

    def _feed_round(
        self,
        conv: Conversation,
        query: str,
        refs: list[int],
        pinned: FrameFeatures,
        cache: ConversationCache,
    ) -> tuple[str, _SegState | None, ConversationCache | None]:
        """Feed the round on top of ``cache``: answer, ``<seg>`` state, the kept cache."""
        kept = cache if self.config.mode == "cached" else None
        first = conv.num_rounds == 0
        ref_tokens = [self._reference_tokens(conv, k, kept) for k in refs]
        answer = self.runtime.config.seg_answer
        if self.config.generate_text:
            answer = self._generate(query, ref_tokens, first, pinned, cache.kv)
        tokens = self._round_tokens(query, answer, len(refs), first)
        hidden, embeds = self._feed(tokens.ids, ref_tokens, pinned.image_tokens, cache.kv)
        seg = [i for i, t in enumerate(tokens.answer_ids) if t == self.runtime.seg_token_id]
        if not seg:
            return answer, None, kept
        start, end = tokens.query_span
        return (
            answer,
            _SegState(
                hidden[len(tokens.user_ids) + seg[0] + tokens.seg_offset][None],
                embeds[start:end].mean(0, keepdim=True),
            ),
            kept,
        )

    def _generate(
        self,
        query: str,
        ref_tokens: list[torch.Tensor],
        first: bool,
        pinned: FrameFeatures,
        cache: KVCache,
    ) -> str:
        """Greedy answer, one token at a time on the conversation's cache (any backend); the
        cache is then cropped back so the answer is fed once more, exactly like a fixed
        answer."""
        tokens = self._round_tokens(query, None, len(ref_tokens), first)
        start = cache.get_seq_length()
        tok = self.runtime.tokenizer
        hidden, _ = self._feed(tokens.user_ids, ref_tokens, pinned.image_tokens, cache)
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
    @staticmethod
    def _on_frame(segment: Segment, frame: Frame) -> Segment:
        """``segment`` at ``frame``'s resolution (history frames are kept smaller)."""
        if segment.mask.shape == (frame.height, frame.width):
            return segment
        mask = resize_mask(segment.mask, frame)
        return Segment(mask, mask_to_box(mask) if mask.any() else segment.box, segment.score)

    def _decode(
        self, conv: Conversation, seg: _SegState | None, refs: list[int], feats: FrameFeatures
    ) -> tuple[list[Segment], bool]:
        """The answer's objects in reading order, and whether the model read the query as
        plural. A single-slot model's mask is an object when it is not empty; a
        multi-segment model's slot when its presence score reaches the threshold too."""
        if seg is None:
            return [], False
        size = self.runtime.input_size
        dense = None
        if refs and not self.config.blank_references:
            masks = torch.stack([self._mask_on(conv, k, feats.hw) for k in refs]).float()
            dense = (T.resize_to_input_frame(masks, feats.hw, size) > 0.5).any(0)[None]
        low, iou, plural = self.runtime.decode_masks(
            feats.sam_embedding, seg.hidden, seg.turn_embeds, dense
        )
        plural = bool(plural.reshape(-1)[0] > 0)
        scores = iou[0].float().cpu().tolist()
        # Only present slots are brought to the frame's resolution (a 12 MP frame: 48 MB a slot)
        slots = [
            k
            for k, s in enumerate(scores)
            if len(scores) == 1 or s >= self.config.presence_threshold
        ]
        if not slots:
            return [], plural
        masks = T.postprocess_masks(low[0, slots, None].float(), feats.hw, size)
        masks = (masks > self.config.mask_threshold).cpu().numpy()
        found = [
            Segment(m, mask_to_box(m), scores[k])
            for m, k in zip(masks, slots, strict=True)
            if m.any()
        ]
        centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in (s.box for s in found)]
        return [found[i] for i in reading_order(centres)], plural

    def _mask_on(self, conv: Conversation, k: int, hw: tuple[int, int]) -> torch.Tensor:
        """Round k's mask at the current frame's size (frames of a conversation may differ)."""
        mask = torch.from_numpy(conv.round(k).mask()).to(self.device)
        if tuple(mask.shape) != hw:
            mask = torch.nn.functional.interpolate(mask[None, None].float(), size=hw)[0, 0] > 0.5
        return mask


def load_engine(
    model_path: str,
    device: str = "cpu",
    backend: str = "torch",
    precision: str = "fp32",
    engine_dir: str = "",
    max_conversations: int = 16,
    max_rounds: int = 32,
    ttl_s: float = 0.0,
    state_dir: str = "",
    llm_quant: str = "none",
    llm_graphs: bool = False,
    compile_graphs: bool = False,
    compile_cache_dir: str = "",
    **config: Any,
) -> SegLLMEngine:
    """The engine for a checkpoint folder; ``backend`` selects the runtime (``llm_quant``,
    ``llm_graphs``, ``compile_graphs``, ``compile_cache_dir``: torch options). With
    ``state_dir`` the conversations saved there are restored and every round is saved."""
    runtime = load_runtime(
        model_path,
        device,
        backend,
        precision,
        engine_dir,
        llm_quant=llm_quant,
        llm_graphs=llm_graphs,
        compile_graphs=compile_graphs,
        compile_cache_dir=compile_cache_dir,
    )
    archive = ConversationArchive(state_dir) if state_dir else None
    store = ConversationStore(max_conversations, max_rounds, ttl_s, archive)
    store.restore()
    return SegLLMEngine(runtime, EngineConfig(**config), store)
