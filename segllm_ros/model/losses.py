"""SegLLM's training losses (LM loss on the answers; BCE + Dice on the masks, as LISA and
SegLLM; SAM's IoU head regressed onto the masks' real IoU), computed from ``SegLLMOutput``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segllm_ros.model.batch import Batch
from segllm_ros.model.outputs import SegLLMOutput


@dataclass
class LossWeights:
    text: float = 1.0
    bce: float = 2.0
    dice: float = 0.5
    target: float = 1.0
    iou: float = 1.0  # SAM's IoU head learns to predict the mask's real IoU (the score)
    reference: float = 0.5  # mask-aware decoding: re-segment the referenced object (0: skip)
    plural: float = 1.0  # multi-segment models: is the query plural (answer kind)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Mean over masks of 1 - soft Dice; logits/target (N, H, W)."""
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def mask_loss(logits: torch.Tensor, target: torch.Tensor, w: LossWeights) -> torch.Tensor:
    if logits.shape[0] == 0:
        return logits.sum() * 0
    return w.bce * F.binary_cross_entropy_with_logits(logits, target) + w.dice * dice_loss(
        logits, target
    )


def batch_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask IoU of thresholded logits; 1 when both are empty."""
    pred = logits > 0
    t = target > 0.5
    inter = (pred & t).flatten(1).sum(1).float()
    union = (pred | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def slot_losses(
    out: SegLLMOutput, batch: Batch, w: LossWeights
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-segment terms: BCE on every slot (absent slots learn to stay empty; summed over
    slots so slot 0 weighs what a single-slot model's mask does), Dice on the present slots,
    the IoU head regressed onto each slot's real IoU (0 where the slot is absent: its
    presence score), and the plural head. Returns (mask, iou_pred, plural, slot-0 IoU)."""
    targets = batch.slot_targets[batch.mask_weight]
    present = batch.slot_present[batch.mask_weight]
    bce = F.binary_cross_entropy_with_logits(out.slot_masks, targets, reduction="none")
    loss = w.bce * bce.mean((2, 3)).sum(1).mean()
    if present.any():
        loss = loss + w.dice * dice_loss(out.slot_masks[present], targets[present])
    ious = batch_iou(out.slot_masks.flatten(0, 1), targets.flatten(0, 1)).view(present.shape)
    iou_loss = F.mse_loss(out.slot_ious, torch.where(present, ious, 0.0).detach())
    plural = F.binary_cross_entropy_with_logits(
        out.plural_logits, batch.plural[batch.mask_weight].to(out.plural_logits.dtype)
    )
    return loss, iou_loss, plural, ious[:, 0]


def add_losses(out: SegLLMOutput, batch: Batch, w: LossWeights) -> SegLLMOutput:
    """Fill ``out``'s mask, IoU-head and reference terms and the weighted total; the text
    term is already in ``out.losses`` (the forward pass computes it beside the logits).
    The reference term is skipped with weight 0 (the forward pass then decodes no
    references, which saves 20-40% of a step once it is learnt: bench/train_step.py)."""
    if out.plural_logits is None:
        targets = batch.targets[batch.mask_weight]
        loss_target = mask_loss(out.masks, targets, w)
        ious = batch_iou(out.masks, targets)
        iou_loss = F.mse_loss(out.iou_predictions, ious.detach())
    else:
        loss_target, iou_loss, out.losses["plural"], ious = slot_losses(out, batch, w)
    loss = w.text * out.losses["text"] + w.target * loss_target + w.iou * iou_loss
    if "plural" in out.losses:
        loss = loss + w.plural * out.losses["plural"]
    out.losses.update(mask=loss_target, iou_pred=iou_loss)
    if out.ref_masks is not None:
        loss_ref = mask_loss(out.ref_masks, batch.first_ref[out.ref_rounds], w)
        loss = loss + w.reference * loss_ref
        out.losses["ref_mask"] = loss_ref
    out.loss, out.mask_iou = loss, ious
    return out
