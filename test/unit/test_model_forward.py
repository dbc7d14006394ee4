"""``SegLLMModel.forward``'s contract: what ``SegLLMOutput`` holds, that its losses are the
terms of its own predictions, and that the training pass computes what the inference path
(a runtime on the same shared processing) computes for the same conversation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_image, tiny_model

from segllm_ros.model import transforms as T
from segllm_ros.model.batch import IGNORE_INDEX
from segllm_ros.model.losses import LossWeights, batch_iou, mask_loss
from segllm_ros.runtime.torch_runtime import TorchRuntime
from segllm_training.trainer.batch import Sample, SampleRound, collate


def _sample() -> Sample:
    first = np.zeros((64, 64), bool)
    first[5:20, 5:20] = True
    second = np.zeros((64, 64), bool)
    second[30:45, 30:50] = True
    return Sample(
        random_image(64, 64, seed=1),
        [
            SampleRound("the red circle", [], first),
            SampleRound("the blue square left of <the output of round 1>", [1], second),
        ],
    )


def test_forward_output_shapes_and_losses_are_its_own_terms():
    torch.manual_seed(0)
    model = tiny_model().train()
    batch = collate([_sample(), _sample()], model)
    w = LossWeights(text=0.7, target=1.3, iou=0.9, reference=0.4)
    out = model(batch, w)
    b, length = batch.input_ids.shape
    s = model.config.sam.image_size
    assert out.logits.shape == (b, length - 1, len(model.tokenizer))
    assert out.seg_hidden.shape == (4, model.hidden_size)
    assert out.prompts.shape[:2] == (4, 2)  # mask-aware decoding: two slots
    assert out.mask_rounds.tolist() == [0, 1, 2, 3]
    assert out.masks.shape == (4, s, s) and out.iou_predictions.shape == (4,)
    assert out.low_res_masks.shape[:2] == (4, 1)
    up = F.interpolate(out.low_res_masks, size=(s, s), mode="bilinear", align_corners=False)
    assert torch.equal(up[:, 0], out.masks)
    assert out.ref_rounds.tolist() == [1, 3] and out.ref_masks.shape == (2, s, s)

    text = F.cross_entropy(
        out.logits.flatten(0, 1), batch.labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )
    targets = batch.targets[batch.mask_weight]
    ious = batch_iou(out.masks, targets)
    terms = {
        "text": text,
        "mask": mask_loss(out.masks, targets, w),
        "iou_pred": F.mse_loss(out.iou_predictions, ious),
        "ref_mask": mask_loss(out.ref_masks, batch.first_ref[out.ref_rounds], w),
    }
    assert out.losses.keys() == terms.keys()
    for name, value in terms.items():
        assert torch.equal(out.losses[name], value), name
    assert torch.equal(out.mask_iou, ious)
    expected = (
        w.text * text
        + w.target * terms["mask"]
        + w.iou * terms["iou_pred"]
        + w.reference * terms["ref_mask"]
    )
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_forward_without_targets_predicts_only_and_reference_weight_zero_skips_decoding():
    model = tiny_model().eval()
    batch = collate([_sample()], model)
    batch.labels = batch.targets = batch.first_ref = None
    with torch.no_grad():
        out = model(batch)
    assert out.loss is None and out.losses == {} and out.mask_iou is None
    assert out.masks.shape[0] == 2 and out.ref_rounds.tolist() == [1]
    with torch.no_grad():
        skipped = model(collate([_sample()], model), LossWeights(reference=0.0))
    assert skipped.ref_masks is None and "ref_mask" not in skipped.losses
    torch.testing.assert_close(skipped.masks, out.masks)  # batched with fewer prompts


def test_forward_computes_what_the_inference_path_computes():
    """One conversation in eval mode: the training pass and the torch runtime (the engine's
    path: shared frame/reference/embedding code, the graph methods) agree on every round's
    ``<seg>`` state and mask logits."""
    model = tiny_model().eval()
    sample = _sample()
    batch = collate([sample], model)
    with torch.no_grad():
        out = model(batch)
        rt = TorchRuntime(model)
        feats = rt.encode_frame(sample.image)
        refs = rt.reference_tokens(
            T.to_tensor(sample.image), torch.from_numpy(sample.rounds[0].mask)[None]
        )
        embeds = rt.embed(batch.input_ids, feats.image_tokens, refs)
        hidden = rt.llm(embeds, rt.new_cache())[0]
        for r in range(2):
            seg = hidden[batch.seg_pos[r]][None]
            torch.testing.assert_close(seg, out.seg_hidden[r : r + 1], atol=1e-5, rtol=1e-5)
            turn = (batch.turn_pool[r][:, None] * embeds[0]).sum(0, keepdim=True)
            dense = batch.dense_ref[r][None] if batch.has_ref[r] else None
            low, iou, _ = rt.decode_masks(feats.sam_embedding, seg, turn, dense)
            torch.testing.assert_close(low, out.low_res_masks[r : r + 1], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(iou[0], out.iou_predictions[r : r + 1], atol=1e-5, rtol=1e-5)
