"""Static KV caches for the torch runtime, so a later round can be replayed as a CUDA graph.

A later round feeds a few dozen tokens on top of a long conversation prefix; eager PyTorch
spends most of that step launching kernels, not reading weights. A graph needs fixed shapes
and fixed addresses, so each live conversation gets a preallocated ``transformers.StaticCache``
(a *slot*) and each round's new tokens are padded to one of a few bucket lengths; the padding
is cropped off the cache right after, so the next round overwrites it. Conversations beyond
the slots, prefills longer than the largest bucket, and conversations that outgrow their slot
run eagerly on a ``DynamicCache`` (the same numbers, only slower).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache, StaticCache

__all__ = ["SlotCache", "StaticCacheConfig", "StaticCachePool"]

_LOG = logging.getLogger(__name__)

# decoder(inputs_embeds, cache, cache_position or None) -> last hidden states (1, L, H)
DecoderStep = Callable[[torch.Tensor, object, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class StaticCacheConfig:
    slots: int = 4  # conversations with a static cache at once
    max_len: int = 2048  # tokens per slot (prefix + new round)
    buckets: tuple[int, ...] = (16, 32, 64, 128, 256)  # padded lengths of a round's feed
    graphs: bool = False  # replay each bucket through CUDA graphs (CUDA only)

    def __post_init__(self) -> None:
        if self.slots < 1 or self.max_len < 1 or not self.buckets:
            raise ValueError(f"static cache needs slots, max_len and buckets >= 1: {self}")
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"buckets must be increasing: {self.buckets}")

    def bucket(self, length: int) -> int | None:
        """The smallest bucket that holds ``length`` tokens (None: longer than all)."""
        return next((b for b in self.buckets if b >= length), None)


class SlotCache:
    """One conversation's KV cache: a static slot while it has one, else a ``DynamicCache``.

    Implements what the engine needs of a cache (``get_seq_length``, negative ``crop``); the
    pool does the feeding.
    """

    def __init__(self, static: StaticCache | None, slot: int | None) -> None:
        self.static = static
        self.slot = slot
        self.dynamic: DynamicCache | None = None if static is not None else DynamicCache()
        self.length = 0

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, max_length: int) -> None:
        """Negative ``max_length``: drop that many tokens from the end."""
        if max_length >= 0:
            raise ValueError("SlotCache.crop takes a negative number of tokens to drop")
        if self.static is not None:
            self.static.crop(max_length)
        else:
            self.dynamic.crop(max_length)
        self.length += max_length

    def nbytes(self) -> int:
        cache = self.static if self.static is not None else self.dynamic
        return sum(
            t.numel() * t.element_size()
            for layer in cache.layers
            for t in (layer.keys, layer.values)
            if t is not None
        )


class StaticCachePool:
    """The slots of one model, and the bucketed (optionally graph-replayed) decoder step."""

    def __init__(
        self, config: StaticCacheConfig, llm_config, decoder: DecoderStep, device: torch.device
    ) -> None:
        self.config = config
        self._decoder = decoder
        self._static = [
            StaticCache(config=llm_config, max_cache_len=config.max_len)
            for _ in range(config.slots)
        ]
        self._free = list(range(config.slots))
        # With graphs, one CUDA graph per bucket shape (and slot address), recorded on first
        # use; on a CPU the static cache alone runs (and is what the parity tests check).
        self._step = (
            torch.compile(decoder, mode="reduce-overhead", dynamic=False)
            if config.graphs and device.type == "cuda"
            else decoder
        )

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def acquire(self) -> SlotCache:
        """A cache in a free slot (emptied), or a dynamic one when every slot is taken."""
        if not self._free:
            return SlotCache(None, None)
        slot = self._free.pop()
        static = self._static[slot]
        if static.get_seq_length():
            static.crop(-int(static.get_seq_length()))
        return SlotCache(static, slot)

    def release(self, cache: SlotCache) -> None:
        """Give the cache's slot back (its conversation ended or its cache was replaced)."""
        if cache.slot is not None:
            self._free.append(cache.slot)
            cache.static, cache.slot = None, None

    def feed(self, embeds: torch.Tensor, cache: SlotCache) -> torch.Tensor:
        """Run (1, L, H) on top of ``cache``; returns the hidden states (1, L, H)."""
        length = embeds.shape[1]
        if cache.static is not None and cache.length + length > self.config.max_len:
            self._to_dynamic(cache)
        if cache.static is None:
            hidden = self._decoder(embeds, cache.dynamic, None)
            cache.length += length
            return hidden
        bucket = self.config.bucket(length)
        start = cache.length
        if bucket is None or start + bucket > self.config.max_len:
            # A long prefill (or the slot's last tokens): eager, unpadded.
            positions = torch.arange(start, start + length, device=embeds.device)
            hidden = self._decoder(embeds, cache.static, positions)
        else:
            padded = torch.nn.functional.pad(embeds, (0, 0, 0, bucket - length))
            positions = torch.arange(start, start + bucket, device=embeds.device)
            hidden = self._step(padded, cache.static, positions)[:, :length].clone()
            if bucket > length:
                cache.static.crop(length - bucket)  # the next feed overwrites the padding
        cache.length += length
        return hidden

    def _to_dynamic(self, cache: SlotCache) -> None:
        """Move a conversation that outgrew its slot to a dynamic cache (same content)."""
        _LOG.info(
            "a conversation outgrew its static KV slot (%d tokens): continuing eagerly",
            self.config.max_len,
        )
        dynamic = DynamicCache()
        for index, layer in enumerate(cache.static.layers):
            dynamic.update(
                layer.keys[:, :, : cache.length].clone(),
                layer.values[:, :, : cache.length].clone(),
                index,
            )
        self.release(cache)
        cache.dynamic = dynamic
