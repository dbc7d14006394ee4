"""Export a SegLLM checkpoint to ONNX graphs plus a manifest (``python -m segllm_ros.export``).

Graphs are traced with torch's TorchScript exporter (``dynamo=False``): it handles the
``transformers`` KV cache through plain tensors and needs no extra packages; every graph is
checked with ``onnx.checker`` before the manifest is written.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import torch

from segllm_ros.engine.references import DEFAULT_MAX_REFS
from segllm_ros.model.family import load_pretrained
from segllm_ros.runtime.manifest import (
    GRAPHS,
    GraphSpec,
    Manifest,
    TensorSpec,
    checkpoint_sha256,
    file_sha256,
)
from segllm_ros.runtime.precision import torch_dtype

if TYPE_CHECKING:
    from segllm_ros.export.graphs import GraphDef

OPSET = 17
EXPORT_PRECISIONS = ("fp32",)
"""Graphs are exported in fp32; fp16/int8 are TensorRT build choices (``build_engines``)."""


def _tensor_specs(values) -> list[TensorSpec]:
    specs = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        specs.append(TensorSpec(v.name, shape, dtype))
    return specs


def write_onnx(graph: GraphDef, path: Path) -> None:
    """Trace one graph to ``path`` at ``OPSET`` and check it with ``onnx.checker`` (call under
    ``torch.no_grad()``)."""
    torch.onnx.export(
        graph.module,
        graph.inputs,
        str(path),
        input_names=graph.input_names,
        output_names=graph.output_names,
        dynamic_axes=graph.dynamic_axes,
        opset_version=OPSET,
        dynamo=False,
    )
    onnx.checker.check_model(str(path), full_check=True)


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    precision: str = "fp32",
    max_refs: int = DEFAULT_MAX_REFS,
) -> Manifest:
    """Write every graph of ``checkpoint`` to ``out`` and return the manifest written there."""
    from segllm_ros.export.graphs import graph_defs

    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"export precision must be one of {sorted(EXPORT_PRECISIONS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_pretrained(checkpoint).to(torch_dtype(precision))
    specs: dict[str, GraphSpec] = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        for name, g in graph_defs(model).items():
            path = out / f"{name}.onnx"
            write_onnx(g, path)
            graph = onnx.load(str(path), load_external_data=False).graph
            specs[name] = GraphSpec(
                path.name,
                file_sha256(path),
                _tensor_specs(graph.input),
                _tensor_specs(graph.output),
            )
    assert set(specs) == set(GRAPHS)
    manifest = Manifest(
        checkpoint=str(checkpoint),
        checkpoint_sha256=checkpoint_sha256(checkpoint),
        precision=precision,
        opset=OPSET,
        exporter=f"torch {torch.__version__} torchscript",
        graphs=specs,
        limits={
            "seq": model.llm.config.max_position_embeddings,
            "past": model.llm.config.max_position_embeddings,
            "total": model.llm.config.max_position_embeddings,
            "refs": max_refs,
        },
    )
    manifest.save(out)
    return manifest
