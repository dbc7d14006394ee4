"""HIPIE-R50's plain-torch port at a tiny size: it builds and runs fast (the engine's tests use
this config), and its rewrites of upstream operations compute what upstream computes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segllm_ros.model.hipie import HipieConfig, HipieR50
from segllm_ros.model.hipie.mask_head import dynamic_layer_shapes, dynamic_mask_logits
from segllm_ros.model.hipie.select import batched_nms, select_target_query


@pytest.fixture(scope="module")
def tiny() -> HipieR50:
    torch.manual_seed(0)
    return HipieR50(HipieConfig.tiny()).eval()


def test_upstream_hipie_tiny_runs(tiny: HipieR50) -> None:
    c = tiny.config
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    with torch.no_grad():
        pixels, (h, w) = tiny.preprocess(image)
        feats = tiny.image_features(pixels)
        out = tiny(feats, torch.randn(1, c.text_tokens, c.text_dim))
        mask, score = tiny.select_target(out)
    s = c.image_size
    assert pixels.shape == (1, 3, s, s) and (h, w) == (96, 128)
    # the padding is normalised black, as upstream pads before normalising
    pad = -torch.tensor(c.pixel_mean) / torch.tensor(c.pixel_std)
    torch.testing.assert_close(pixels[0, :, h:, :].mean((1, 2)), pad)
    q = c.num_queries
    assert out.logits.shape == (1, q, c.text_tokens) and out.boxes.shape == (1, q, 4)
    assert out.iou.shape == (1, q, 1) and out.masks.shape == (1, q, s // 4, s // 4)
    assert all(bool(t.isfinite().all()) for t in (out.logits, out.boxes, out.masks))
    assert mask.shape == (1, 1, s // 4, s // 4) and score.shape == (1,)
    assert any(torch.equal(mask[0, 0], m) for m in out.masks[0])


def test_upstream_hipie_tiny_runs_in_bfloat16() -> None:
    """Every constant follows the model's dtype, so the engine may cast HIPIE with the LLM."""
    torch.manual_seed(0)
    c = HipieConfig.tiny()
    model = HipieR50(c).eval().to(torch.bfloat16)
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    with torch.no_grad():
        pixels, _ = model.preprocess(image)
        out = model(model.image_features(pixels), torch.randn(1, 8, c.text_dim).bfloat16())
        mask, score = model.select_target(out)
    assert pixels.dtype == out.masks.dtype == mask.dtype == torch.bfloat16
    assert bool(out.masks.isfinite().all()) and score.shape == (1,)


def test_upstream_hipie_dynamic_convs_as_matmul() -> None:
    """The batched-matmul mask MLP equals CondInst's grouped 1x1 convolutions."""
    torch.manual_seed(0)
    n_q, cin, h, w, stride = 5, 8, 6, 7, 8
    shapes = dynamic_layer_shapes(cin, 8, 3)
    params = torch.randn(1, n_q, sum(o * i + o for o, i in shapes))
    feats, centres = torch.randn(1, cin, h, w), torch.rand(1, n_q, 2) * 64
    got = dynamic_mask_logits(params, shapes, centres, feats, stride)

    # upstream's formulation: per-query inputs stacked on channels, grouped conv2d
    ys, xs = torch.meshgrid(
        torch.arange(h) * stride + 4.0, torch.arange(w) * stride + 4.0, indexing="ij"
    )
    rel = centres[0, :, :, None, None] - torch.stack([xs, ys])[None]  # (Q, 2, h, w)
    x = torch.cat([rel, feats.expand(n_q, -1, -1, -1)], 1).reshape(1, -1, h, w)
    sizes = [o * i for o, i in shapes] + [o for o, _ in shapes]
    chunks = params[0].split(sizes, dim=1)
    for k, (o, i) in enumerate(shapes):
        x = F.conv2d(x, chunks[k].reshape(n_q * o, i, 1, 1), chunks[3 + k].reshape(-1), groups=n_q)
        x = F.relu(x) if k < 2 else x
    x = x.reshape(n_q, 1, h, w)
    up = F.interpolate(
        F.pad(x, (0, 1, 0, 1), mode="replicate"),
        size=(2 * h + 1, 2 * w + 1),
        mode="bilinear",
        align_corners=True,
    )
    want = F.pad(up, (1, 0, 1, 0), mode="replicate")[:, 0, : 2 * h, : 2 * w]
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-4)


def test_upstream_hipie_nms_per_label() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    # box 1 overlaps box 0 (IoU 0.82) with the same label; box 2 has another label
    assert batched_nms(boxes, scores, labels, 0.7).tolist() == [0, 2, 3]
    assert batched_nms(boxes, scores, labels, 0.9).tolist() == [0, 1, 2, 3]


def test_upstream_hipie_answer_is_best_target() -> None:
    """The answer is the best query for the target tokens, even when a query scores higher
    for the reference tokens."""
    logits = torch.full((3, 8), -4.0)
    logits[0, :4] = 5.0  # a confident reference
    logits[1, 4:] = 2.0  # the target
    logits[2, 4:] = 1.0  # a weaker target elsewhere
    boxes = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.6, 0.6, 0.2, 0.2], [0.3, 0.8, 0.1, 0.1]])
    iou = torch.zeros(3, 1)
    index, score = select_target_query(logits, boxes, iou)
    assert index == 1
    torch.testing.assert_close(score, torch.sqrt(torch.sigmoid(torch.tensor(2.0)) * 0.5))


def test_upstream_hipie_no_target_instance_is_an_empty_answer() -> None:
    """Every query scores "reference" above "target", so the top instances (4 here, 100 in
    the release) are all references: upstream would still show the best one (score -1); the
    answer is an empty mask instead."""
    torch.manual_seed(0)
    model = HipieR50(dataclasses.replace(HipieConfig.tiny(), max_instances=4)).eval()
    image = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    with torch.no_grad():
        pixels, _ = model.preprocess(image)
        out = model(model.image_features(pixels), torch.randn(1, 8, model.config.text_dim))
    half = out.logits.shape[-1] // 2
    out.logits[..., :half] = 5.0
    out.logits[..., half:] = -5.0
    mask, score = model.select_target(out)
    assert float(score) == -1.0
    assert bool((mask < 0).all())
    out.logits[..., half:] = 6.0  # targets back on top: a real mask again
    mask, score = model.select_target(out)
    assert float(score) > 0 and bool((mask > 0).any())
