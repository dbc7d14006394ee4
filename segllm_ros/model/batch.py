"""The input of ``SegLLMModel.forward``: whole conversations, teacher-forced, as tensors
(``segllm_training.trainer.batch.collate`` builds it from conversations)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
"""Label of positions without a next-token target (``cross_entropy``'s ``ignore_index``)."""


@dataclass
class Batch:
    """B conversations with R rounds in all; each round's ``<seg>`` is decoded into a mask.
    ``labels``, ``targets`` and ``first_ref`` are the training targets (None: predict only)."""

    images: list[torch.Tensor]  # per conversation (3, H, W) 0..255; sizes may differ
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor | None  # (B, L) answer tokens, IGNORE_INDEX elsewhere
    seg_batch: torch.Tensor  # (R,) image index of each round
    seg_pos: torch.Tensor  # (R,) position of each round's <seg>
    turn_pool: torch.Tensor  # (R, L) averaging weights over each round's query tokens
    ref_masks: list[torch.Tensor]  # per image: (refs in sequence order, H, W) bool
    targets: torch.Tensor | None  # (R, S, S) target masks in SAM input space
    dense_ref: torch.Tensor  # (R, S, S) union of referenced masks, SAM input space
    first_ref: torch.Tensor | None  # (R, S, S) first referenced mask (mask-aware decoding)
    has_ref: torch.Tensor  # (R,) bool
    mask_weight: torch.Tensor  # (R,) bool: round is decoded (and gets a mask loss)
    ref_keep: list[torch.Tensor] | None = None  # per image: (refs,) bool, None = model draws
    # Multi-segment models (config.max_segments = N > 1): each round's target instances in
    # reading order, one per slot (empty where the answer has fewer), and the query's number.
    slot_targets: torch.Tensor | None = None  # (R, N, S, S)
    slot_present: torch.Tensor | None = None  # (R, N) bool
    plural: torch.Tensor | None = None  # (R,) bool

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            k: (
                v.to(device)
                if isinstance(v, torch.Tensor)
                else [t.to(device) for t in v]
                if isinstance(v, list)
                else v
            )
            for k, v in self.__dict__.items()
        }
        return Batch(**moved)
