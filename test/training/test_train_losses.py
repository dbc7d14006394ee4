"""Losses on hand-made masks, and the batch forward pass's loss bookkeeping: mask loss only
on the chosen rounds, the reference (mask-aware) term at its weight."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import tiny_model

from segllm_ros.model.losses import LossWeights, batch_iou, dice_loss, mask_loss
from segllm_training.trainer.batch import Sample, SampleRound, collate
from segllm_training.trainer.losses import forward_batch

BIG = 30.0  # logit saturating the sigmoid: 0/1 predictions


def _masks():
    target = torch.zeros(1, 4, 4)
    target[0, 0, :] = 1  # 4 pixels: the top row
    pred = torch.full((1, 4, 4), -BIG)
    pred[0, 0, :2] = BIG  # 2 of them ...
    pred[0, 1, :2] = BIG  # ... plus 2 wrong ones
    return pred, target


def test_dice_and_iou_on_hand_made_masks():
    pred, target = _masks()
    # |P| = 4, |T| = 4, |P n T| = 2, eps = 1: 1 - (2*2 + 1) / (4 + 4 + 1)
    assert dice_loss(pred, target).item() == pytest.approx(1 - 5 / 9, abs=1e-6)
    assert dice_loss(target * 2 * BIG - BIG, target).item() == pytest.approx(0, abs=1e-6)
    assert batch_iou(pred, target).item() == pytest.approx(2 / 6)
    assert batch_iou(torch.full((1, 4, 4), -BIG), torch.zeros(1, 4, 4)).item() == 1.0


def test_bce_plus_dice_weights():
    zeros = torch.zeros(1, 4, 4)
    _, target = _masks()
    only_bce = LossWeights(bce=1.0, dice=0.0)
    assert mask_loss(zeros, target, only_bce).item() == pytest.approx(math.log(2), abs=1e-6)
    both = LossWeights(bce=2.0, dice=0.5)
    expected = 2 * math.log(2) + 0.5 * dice_loss(zeros, target).item()
    assert mask_loss(zeros, target, both).item() == pytest.approx(expected, abs=1e-6)


def _conversation(seed: int, second_target_row: int) -> Sample:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    first = np.zeros((64, 64), bool)
    first[5:20, 5:20] = True
    second = np.zeros((64, 64), bool)
    second[second_target_row : second_target_row + 10, 30:50] = True
    return Sample(
        image,
        [
            SampleRound("the red circle", [], first),
            SampleRound("the red circle that is not <instance 1>", [1], second),
        ],
        mask_rounds=[0],
        ref_keep=[True],
    )


def test_mask_loss_only_on_chosen_rounds_and_reference_weight():
    torch.manual_seed(0)
    model = tiny_model().train()
    w = LossWeights(reference=0.5)
    # Round 2 is not chosen for the mask loss: moving its target changes nothing.
    loss_a, metrics = forward_batch(model, collate([_conversation(0, 30)], model), w)
    loss_b, _ = forward_batch(model, collate([_conversation(0, 45)], model), w)
    assert loss_a.item() == pytest.approx(loss_b.item(), abs=1e-6)
    assert "ref_mask" not in metrics  # round 1 has no reference
    # Both rounds chosen: the reference term of round 2 enters at weight 0.5.
    sample = _conversation(0, 30)
    sample.mask_rounds = None
    loss, m = forward_batch(model, collate([sample], model), w)
    expected = (
        w.text * m["text"]
        + w.target * m["mask"]
        + w.iou * m["iou_pred"]
        + w.reference * m["ref_mask"]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # Weight 0 skips the second decode: no reference term, and the target term is unchanged.
    loss_off, m_off = forward_batch(model, collate([sample], model), LossWeights(reference=0.0))
    assert "ref_mask" not in m_off
    assert m_off["mask"] == pytest.approx(m["mask"], rel=1e-5)
    assert loss_off.item() == pytest.approx(loss.item() - w.reference * m["ref_mask"], rel=1e-5)
