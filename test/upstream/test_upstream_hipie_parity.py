"""HIPIE-R50 in plain torch against the authors' code (the oracle's recorded run, contract 3):
same random weights and inputs, compared stage by stage from the backbone to the answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from random_weights import oracle_inputs, random_state

from segllm_ros.model.hipie import HipieConfig, HipieR50
from segllm_ros.model.hipie.deform_attn import ms_deform_attn_core
from segllm_ros.model.hipie.select import (
    batched_nms,
    box_cxcywh_to_xyxy,
    query_scores,
    ranked_instances,
)

FIXTURES = Path(__file__).parent / "fixtures"
ATOL = 1e-4  # the bound for the encoder memory, logits and boxes


@pytest.fixture(scope="module")
def oracle() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "hipie_r50_oracle.npz") as data:
        arrays = dict(data)
    arrays["_spec"] = json.loads((FIXTURES / "hipie_r50_oracle.json").read_text())["arrays"]
    return arrays


@pytest.fixture(scope="module")
def run(oracle: dict) -> dict[str, torch.Tensor]:
    """Our model on the oracle's weights and pixels, with every compared stage recorded."""
    inputs = oracle_inputs()
    model = HipieR50(HipieConfig(image_size=inputs.size)).eval()
    model.load_state_dict(random_state({k: tuple(v.shape) for k, v in model.state_dict().items()}))
    detr, t = model.detr.detr, model.transformer
    rec: dict[str, torch.Tensor] = {}

    def keep(name, pick=lambda args, out: out):
        return lambda module, args, out: rec.__setitem__(name, pick(args, out))

    for i, proj in enumerate(detr.input_proj):
        proj.register_forward_hook(keep(f"input_proj_{i}"))
    t.encoder.vl_layers[0]["b_attn"].register_forward_hook(keep("fusion", lambda a, o: o))
    t.encoder.layers[0].register_forward_hook(keep("encoder_layer0"))
    t.decoder.class_embed[-1].register_forward_hook(keep("enc_outputs_class"))
    t.decoder.register_forward_hook(keep("init_reference", lambda a, o: a[1]))
    t.decoder.register_forward_hook(keep("decoder"))  # all 110 queries, background included

    with torch.no_grad():
        rec["pixels"], rec["valid_hw"] = model.preprocess(inputs.image)
        u8 = torch.from_numpy(oracle["pixels_u8"]).float()[None]
        pixels = (u8 - model.pixel_mean.view(1, 3, 1, 1)) / model.pixel_std.view(1, 3, 1, 1)
        rec["backbone_res3"], rec["backbone_res4"], rec["backbone_res5"] = feats = (
            model.image_features(pixels)
        )
        out = model(feats, inputs.text)
        rec["answer"] = model.select_target(out)
    rec["out"] = out
    std, mean = model.pixel_std.view(1, 3, 1, 1), model.pixel_mean.view(1, 3, 1, 1)
    rec["unnormalised"] = (rec["pixels"] * std + mean).round()
    return rec


def _maxdiff(oracle: dict, name: str, ours: torch.Tensor) -> float:
    """max |ours - theirs| over what the fixture stores (some arrays are strided subsamples)."""
    sub = oracle["_spec"][name].get("subsample")
    mine = ours.detach().numpy().reshape(-1)
    mine = mine[:: sub["step"]] if sub else mine
    return float(np.abs(mine - oracle[name].reshape(-1)).max())


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_upstream_hipie_preprocess(run: dict, oracle: dict) -> None:
    """Our resize (torch, antialiased) is within one grey level of SAM's PIL resize."""
    assert tuple(run["valid_hw"]) == tuple(oracle["valid_hw"])
    diff = (run["unnormalised"][0] - torch.from_numpy(oracle["pixels_u8"]).float()).abs()
    assert float(diff.max()) <= 1.0 and float(diff.mean()) < 0.25


STAGES = [
    "backbone_res3", "backbone_res4", "backbone_res5",
    "input_proj_0", "input_proj_1", "input_proj_2", "input_proj_3",
    "fusion_visual", "fusion_lang", "encoder_layer0", "memory", "lang_after_encoder",
    "enc_outputs_class",
]  # fmt: skip


def test_upstream_hipie_encoder_stages(run: dict, oracle: dict) -> None:
    ours = dict(run)
    ours["fusion_visual"], ours["fusion_lang"] = run["fusion"]
    ours["memory"] = run["out"].memory
    ours["lang_after_encoder"] = run["fusion"][1]  # no later layer touches the text
    diffs = {name: _maxdiff(oracle, name, ours[name]) for name in STAGES}
    print("max |ours - upstream|:", diffs)
    assert max(diffs.values()) <= ATOL, diffs


def test_upstream_hipie_queries_and_heads(run: dict, oracle: dict) -> None:
    out = run["out"]
    assert torch.equal(out.topk, torch.from_numpy(oracle["topk_indices"]))
    diffs = {
        "init_reference": _maxdiff(oracle, "init_reference", run["init_reference"]),
        "hs_last": _maxdiff(oracle, "hs_last", run["decoder"][0]),
        "inter_references[-2]": float(
            np.abs(run["decoder"][1].numpy() - oracle["inter_references"][-2]).max()
        ),
        "logits": float(np.abs(out.logits.numpy() - oracle["pred_logits"][:, 10:]).max()),
        "boxes": float(np.abs(out.boxes.numpy() - oracle["pred_boxes"][:, 10:]).max()),
        "iou": float(np.abs(out.iou.numpy() - oracle["pred_boxious"][:, 10:]).max()),
    }
    print("max |ours - upstream|:", diffs)
    assert max(diffs.values()) <= ATOL, diffs


def test_upstream_hipie_masks_and_answer(run: dict, oracle: dict) -> None:
    out = run["out"]
    scores = query_scores(out.logits[0], out.iou[0])
    np.testing.assert_allclose(scores.numpy(), oracle["fg_scores"], atol=ATOL)
    best, labels = scores.max(1)
    keep = batched_nms(box_cxcywh_to_xyxy(out.boxes[0]), best, labels, 0.7)
    assert keep.tolist() == oracle["nms_keep"].tolist()
    queries, labels, inst_scores = ranked_instances(scores, out.boxes[0])
    assert queries.tolist() == oracle["inst_query"].tolist()
    assert labels.tolist() == oracle["inst_labels"].tolist()
    # the fixture holds the scores after SegLLM's in-place "reference -> -1" step
    inst_scores = torch.where(labels == 1, inst_scores, torch.full_like(inst_scores, -1.0))
    np.testing.assert_allclose(inst_scores.numpy(), oracle["inst_scores"], atol=ATOL)

    fg = oracle["mask_queries"] >= 10  # background queries' masks are never answered
    ours = out.masks[0, oracle["mask_queries"][fg] - 10]
    theirs = torch.from_numpy(oracle["mask_logits"][fg])
    print("mask logits max |ours - upstream|:", float((ours - theirs).abs().max()))
    ious = [_iou(a > 0, b > 0) for a, b in zip(ours, theirs, strict=True)]
    print("mask IoU min:", min(ious))
    assert min(ious) >= 0.999

    mask, score = run["answer"]
    chosen = next(i for i, m in enumerate(out.masks[0]) if torch.equal(m, mask[0, 0]))
    assert chosen + 10 == int(oracle["final_query"])
    assert abs(float(score) - float(oracle["final_score"])) <= ATOL
    s = out.masks.shape[-1] * 4
    full = F.interpolate(mask, size=(s, s), mode="bilinear", align_corners=False)[0, 0] > 0
    want = np.unpackbits(oracle["final_mask_packed"])[: s * s].reshape(s, s).astype(bool)
    print("answer mask IoU:", _iou(full, torch.from_numpy(want)), "score", float(score))
    assert _iou(full, torch.from_numpy(want)) >= 0.999


def test_upstream_hipie_msdeform_attn_core(oracle: dict) -> None:
    shapes = [tuple(int(v) for v in hw) for hw in oracle["msda_spatial_shapes"]]
    got = ms_deform_attn_core(
        torch.from_numpy(oracle["msda_value"]),
        shapes,
        torch.from_numpy(oracle["msda_sampling_locations"]),
        torch.from_numpy(oracle["msda_attention_weights"]),
    )
    np.testing.assert_allclose(got.numpy(), oracle["msda_output"], atol=1e-6, rtol=0)
