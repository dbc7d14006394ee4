"""Mask losses (BCE + Dice, as LISA/SegLLM) and the batch forward pass that uses them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segllm_training.trainer.batch import IGNORE_INDEX, Batch


@dataclass
class LossWeights:
    text: float = 1.0
    bce: float = 2.0
    dice: float = 0.5
    target: float = 1.0
    iou: float = 1.0         # SAM's IoU head learns to predict the mask's real IoU (the score)
    reference: float = 0.5   # mask-aware decoding: re-segment the referenced object (0: skip)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Mean over masks of 1 - soft Dice; logits/target (N, H, W)."""
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def mask_loss(logits: torch.Tensor, target: torch.Tensor, w: LossWeights) -> torch.Tensor:
    if logits.shape[0] == 0:
        return logits.sum() * 0
    return w.bce * F.binary_cross_entropy_with_logits(logits, target) + w.dice * dice_loss(
        logits, target)


def batch_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask IoU of thresholded logits; 1 when both are empty."""
    pred = logits > 0
    t = target > 0.5
    inter = (pred & t).flatten(1).sum(1).float()
    union = (pred | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class BatchPrediction:
    """What one teacher-forced pass predicts, in ``batch.mask_weight`` round order."""

    text_loss: torch.Tensor
    target_logits: torch.Tensor          # (R, S, S) mask logits of the decoded rounds
    target_iou: torch.Tensor             # (R,) SAM's predicted IoU
    ref_logits: torch.Tensor | None      # mask-aware decoding: the referenced object again
    ref_targets: torch.Tensor | None


def prompt_pass(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLM half of a teacher-forced pass: the LM loss on the answers and every round's
    SAM prompt tokens (R, slots, T, C), from the ``<seg>`` state and the turn's mean input."""
    image_tokens = model.image_tokens(batch.images)
    keeps = batch.ref_keep if batch.ref_keep is not None else [None] * len(batch.ref_masks)
    ref_tokens = torch.cat([model.reference_tokens(img, refs, keep) for img, refs, keep
                            in zip(batch.images, batch.ref_masks, keeps, strict=True)])
    embeds = model.embed(batch.input_ids, image_tokens.flatten(0, 1), ref_tokens)
    hidden = model.llm_hidden(embeds, batch.attention_mask).last_hidden_state
    logits = model.llm.get_output_embeddings()(hidden[:, :-1])
    text_loss = F.cross_entropy(logits.flatten(0, 1), batch.labels[:, 1:].flatten(),
                                ignore_index=IGNORE_INDEX)
    turn_mean = torch.einsum("rl,rlh->rh", batch.turn_pool, embeds[batch.seg_batch])
    return text_loss, model.seg_prompts(hidden[batch.seg_batch, batch.seg_pos], turn_mean)


def predict_batch(model, batch: Batch, decode_references: bool = True) -> BatchPrediction:
    """One teacher-forced pass over whole conversations: the LM loss on the answers and the
    mask logits of every round in ``batch.mask_weight`` (upstream: k random rounds), plus the
    referenced object's when mask-aware decoding is on and ``decode_references``."""
    text_loss, prompts = prompt_pass(model, batch)
    sam_emb = model.sam_embedding(batch.images)
    size = model.config.sam.image_size
    target_logits, target_iou, ref_logits, ref_targets = [], [], [], []
    for b in range(len(batch.images)):
        idx = ((batch.seg_batch == b) & batch.mask_weight).nonzero().flatten()
        if idx.numel() == 0:
            continue
        dense = batch.dense_ref[idx]
        slots = [prompts[idx, 0]]
        with_ref = idx[batch.has_ref[idx]]
        if decode_references and model.config.mask_aware_decoding and with_ref.numel():
            slots.append(prompts[with_ref, 1])
            dense = torch.cat([dense, batch.dense_ref[with_ref]])
        low, iou = model.decode_masks(sam_emb[b : b + 1], torch.cat(slots), dense)
        up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        target_logits.append(up[: idx.numel()])
        target_iou.append(iou[: idx.numel(), 0])
        if len(slots) > 1:
            ref_logits.append(up[idx.numel():])
            ref_targets.append(batch.first_ref[with_ref])
    return BatchPrediction(text_loss, torch.cat(target_logits), torch.cat(target_iou),
                           torch.cat(ref_logits) if ref_logits else None,
                           torch.cat(ref_targets) if ref_targets else None)


def forward_batch(model, batch: Batch, w: LossWeights) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one teacher-forced pass (:func:`predict_batch`): LM loss on the answers, mask
    loss on every decoded round's target and, with mask-aware decoding, its referenced
    object (skipped when its weight is 0, which saves 20-40% of a step once that loss is
    learnt: bench/train_step.py); SAM's IoU head learns the masks' real IoU."""
    pred = predict_batch(model, batch, decode_references=w.reference > 0)
    targets = batch.targets[batch.mask_weight]
    loss_target = mask_loss(pred.target_logits, targets, w)
    ious = batch_iou(pred.target_logits, targets)
    iou_loss = F.mse_loss(pred.target_iou, ious.detach())
    loss = w.text * pred.text_loss + w.target * loss_target + w.iou * iou_loss
    metrics = {"text": pred.text_loss.item(), "mask": loss_target.item(),
               "iou_pred": iou_loss.item()}
    if pred.ref_logits is not None:
        loss_ref = mask_loss(pred.ref_logits, pred.ref_targets, w)
        loss = loss + w.reference * loss_ref
        metrics["ref_mask"] = loss_ref.item()
    metrics["iou"] = ious.mean().item()
    metrics["loss"] = loss.item()
    return loss, metrics
