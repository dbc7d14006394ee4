"""HIPIE-R50's ONNX graphs (opset 17) compute what the torch model computes: the per-frame
backbone graph and the per-round decoder graph (NMS and the answer's choice stay outside),
both run in ONNX Runtime on the oracle's random weights and inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from random_weights import oracle_inputs, random_state

from segllm_ros.export.hipie import ROUND_OUTPUTS, export_hipie
from segllm_ros.model.hipie import HipieConfig, HipieR50

# max |onnx - torch| allowed, per output (masks are logits of magnitude ~10)
TOLERANCE = {"res": 1e-4, "logits": 1e-4, "boxes": 1e-5, "iou": 1e-4, "masks": 1e-3}


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def model() -> HipieR50:
    model = HipieR50(HipieConfig(image_size=oracle_inputs().size)).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(random_state(shapes))
    return model


def test_upstream_hipie_onnx_matches_torch(model: HipieR50, tmp_path: Path) -> None:
    inputs = oracle_inputs()
    paths = export_hipie(model, tmp_path)
    with torch.no_grad():
        pixels, _ = model.preprocess(inputs.image)
        feats = model.image_features(pixels)
        out = model(feats, inputs.text)

    onnx_feats = _session(paths["hipie_image"]).run(None, {"pixels": pixels.numpy()})
    diffs = {
        f"res{i + 3}": float(np.abs(a - b.numpy()).max())
        for i, (a, b) in enumerate(zip(onnx_feats, feats, strict=True))
    }
    # the round graph gets torch's features so its own error is measured
    feeds = {f"res{i + 3}": f.numpy() for i, f in enumerate(feats)}
    onnx_out = _session(paths["hipie_round"]).run(None, {**feeds, "text": inputs.text.numpy()})
    for name, got in zip(ROUND_OUTPUTS, onnx_out, strict=True):
        diffs[name] = float(np.abs(got - getattr(out, name).numpy()).max())
    print("max |onnx - torch|:", diffs)
    for name, diff in diffs.items():
        assert diff <= TOLERANCE[name.rstrip("345")], (name, diff)
