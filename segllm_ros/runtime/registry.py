"""The backends a checkpoint can run on, by name: adding one = a module with a loader that
returns a ``Runtime`` + one entry in ``BACKENDS``. Loaders are imported only when chosen (a
backend's libraries may be absent elsewhere), so this module imports no torch: node
parameters and the launch file read the choices from ``BACKENDS``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segllm_ros.runtime.base import Runtime


@dataclass(frozen=True)
class Backend:
    """``loader`` is ``module:function``, called as ``function(model_path, device=...,
    precision=...)``, plus ``onnx_dir=...`` when the backend runs the ONNX export
    (``exported``), plus the backend's own ``options`` (keyword arguments)."""

    loader: str
    exported: bool
    options: tuple[str, ...] = ()


BACKENDS: dict[str, Backend] = {
    "torch": Backend(
        "segllm_ros.runtime.torch_runtime:load_torch",
        exported=False,
        options=("llm_quant", "llm_graphs", "compile_graphs", "compile_cache_dir"),
    ),
    "onnxruntime": Backend("segllm_ros.runtime.onnxruntime:load_onnxruntime", exported=True),
    "tensorrt": Backend("segllm_ros.runtime.tensorrt:load_tensorrt", exported=True),
}


def register_backend(name: str, backend: Backend) -> None:
    """Add a backend under ``name`` (plugins, tests)."""
    if name in BACKENDS:
        raise ValueError(f"backend {name!r} is already registered")
    BACKENDS[name] = backend


def load_runtime(
    model_path: str,
    device: str = "cpu",
    backend: str = "torch",
    precision: str = "fp32",
    engine_dir: str = "",
    **options: object,
) -> Runtime:
    """The runtime for a checkpoint folder. ``engine_dir`` holds the ONNX export (default
    ``<model_path>/onnx``) and, under ``engines/``, the TensorRT engine cache; ``options``
    are backend-specific (torch: ``llm_quant``, ``llm_graphs``, ``compile_graphs``,
    ``compile_cache_dir``) and refused, when set, for a backend without them. Every file is
    checked here, at configure time, never at the first frame."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    spec = BACKENDS[backend]
    unsupported = sorted(
        k
        for k, v in options.items()
        if k not in spec.options and v not in (None, False, "", "none")
    )
    if unsupported:
        raise ValueError(f"the {backend} backend has no option {', '.join(unsupported)}")
    module, _, function = spec.loader.partition(":")
    loader = getattr(importlib.import_module(module), function)
    kwargs = {k: v for k, v in options.items() if k in spec.options}
    if spec.exported:
        kwargs["onnx_dir"] = engine_dir or str(Path(model_path) / "onnx")
    return loader(model_path, device=device, precision=precision, **kwargs)
