"""ONNX graphs of HIPIE-R50 (the released SegLLM checkpoints' mask decoder).

Two graphs, split where the engine caches: ``hipie_image`` (pixels -> ResNet res3-res5, once
per frame) and ``hipie_round`` (those maps + the 8 LLM tokens of one ``<seg>`` -> per-query
class logits, boxes, IoU logits and mask logits). NMS and the choice of the answer stay
outside, in ``HipieR50.select_target``: they are data-dependent and cheap.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from segllm_ros.export import OPSET
from segllm_ros.export.graphs import GraphDef
from segllm_ros.model.hipie import HipieR50

ROUND_OUTPUTS = ["logits", "boxes", "iou", "masks"]


class _ImageGraph(nn.Module):
    def __init__(self, model: HipieR50) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.image_features(pixels))


class _RoundGraph(nn.Module):
    def __init__(self, model: HipieR50) -> None:
        super().__init__()
        self.model = model

    def forward(self, res3: Tensor, res4: Tensor, res5: Tensor, text: Tensor):
        out = self.model([res3, res4, res5], text)
        return out.logits, out.boxes, out.iou, out.masks


def hipie_graph_defs(model: HipieR50) -> dict[str, GraphDef]:
    """The two graphs with example inputs (batch 1, the configured square size)."""
    c = model.config
    pixels = torch.zeros(1, 3, c.image_size, c.image_size)
    with torch.no_grad():
        feats = model.image_features(pixels)
    text = torch.zeros(1, c.text_tokens, c.text_dim)
    names = ["res3", "res4", "res5"]
    return {
        "hipie_image": GraphDef(_ImageGraph(model), (pixels,), ["pixels"], names, {}),
        "hipie_round": GraphDef(
            _RoundGraph(model), (*feats, text), [*names, "text"], ROUND_OUTPUTS, {}
        ),
    }


def export_hipie(model: HipieR50, out: str | Path, graphs: tuple[str, ...] | None = None):
    """Write the graphs (all, or those named) as ``<name>.onnx`` under ``out``, each checked
    with ``onnx.checker``. Returns {name: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    paths = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        for name, g in hipie_graph_defs(model).items():
            if graphs is not None and name not in graphs:
                continue
            path = out / f"{name}.onnx"
            torch.onnx.export(
                g.module,
                g.inputs,
                str(path),
                input_names=g.input_names,
                output_names=g.output_names,
                opset_version=OPSET,
                dynamo=False,
            )
            onnx.checker.check_model(str(path))
            paths[name] = path
    return paths
