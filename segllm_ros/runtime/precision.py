"""Precision names -> torch dtypes, defined once for the runtimes, the exporter and training.
ONNX Runtime runs the export's precision (fp32); TensorRT builds fp32, fp16 or int8 engines
(``segllm_ros.runtime.tensorrt.TRT_PRECISIONS``)."""

from __future__ import annotations

import torch

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def torch_dtype(precision: str) -> torch.dtype:
    """The dtype of a precision name; a ``ValueError`` listing the names if unknown."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]
