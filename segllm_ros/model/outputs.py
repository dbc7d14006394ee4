"""What ``SegLLMModel.forward`` returns (its contract, as transformers' model outputs and
segment-anything's ``Sam.forward`` dict state theirs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SegLLMOutput:
    """One teacher-forced pass over B conversations with R rounds; M rounds decoded
    (``batch.mask_weight``) into N = ``config.max_segments`` instance slots each, K of them
    also re-segment their referenced object.

    Losses are filled when the batch carries targets: ``loss`` is the weighted sum,
    ``losses`` the unweighted terms (``text``, ``mask``, ``iou_pred`` and, when K > 0,
    ``ref_mask``), ``mask_iou`` the real IoU of each decoded mask that ``iou_pred`` regresses.
    """

    logits: torch.Tensor  # (B, L-1, V) position t's logits for token t+1
    seg_hidden: torch.Tensor  # (R, H) last hidden state at each round's <seg>
    prompts: torch.Tensor  # (R, slots, T, C) SAM prompt tokens (slot 0: target)
    mask_rounds: torch.Tensor  # (M,) indices of the decoded rounds, in order
    low_res_masks: torch.Tensor  # (M, 1, s, s) SAM's low-res mask logits
    masks: torch.Tensor  # (M, S, S) the same at SAM's input size
    iou_predictions: torch.Tensor  # (M,) SAM's predicted IoU
    ref_rounds: torch.Tensor | None  # (K,) decoded rounds whose reference was decoded
    ref_masks: torch.Tensor | None  # (K, S, S) mask logits of the referenced object
    slot_masks: torch.Tensor  # (M, N, S, S) every instance slot (slot 0 is ``masks``)
    slot_ious: torch.Tensor  # (M, N) predicted IoU = presence score of each slot
    plural_logits: torch.Tensor | None  # (M,) the query is plural (None: single-slot model)
    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    mask_iou: torch.Tensor | None = None  # (M,)
