"""ONNX Runtime backend: one ``InferenceSession`` per exported graph.

CPU everywhere; the CUDA execution provider where ``onnxruntime-gpu`` is installed and a CUDA
device is asked for. Thread count follows torch's (one knob for every backend).
"""

from __future__ import annotations

from pathlib import Path

import torch

from segllm_ros.runtime.graph_runtime import GraphRuntime
from segllm_ros.runtime.manifest import DeploymentError, Manifest, export_command


def providers_for(device: str) -> list[str]:
    """Execution providers for a torch-style device string, best first, installed only."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if device.startswith("cuda") else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


class OrtSession:
    """A graph on ONNX Runtime behind the ``Session`` protocol (torch in, torch out)."""

    def __init__(self, path: Path, providers: list[str], fix: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types
            raise DeploymentError(
                f"{path} cannot be loaded by ONNX Runtime ({err}); re-export with `{fix}`"
            ) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        arrays = {k: v.detach().cpu().numpy() for k, v in feeds.items()}
        outs = self.session.run(self.output_names, arrays)
        return {k: torch.from_numpy(v) for k, v in zip(self.output_names, outs, strict=True)}


def load_onnxruntime(
    checkpoint: str | Path, onnx_dir: str | Path, device: str = "cpu", precision: str | None = None
) -> GraphRuntime:
    """Check the export against ``checkpoint`` (and ``precision``, when given) and open every
    graph (configure time)."""
    onnx_dir = Path(onnx_dir)
    manifest = Manifest.read(onnx_dir)
    if precision is not None and precision != manifest.precision:
        # before hashing the checkpoint and the graphs and opening sessions for nothing
        raise ValueError(
            f"{onnx_dir} holds {manifest.precision} graphs; "
            f"precision {precision!r} needs another export"
        )
    manifest.check(onnx_dir, checkpoint)
    providers = providers_for(device)
    fix = export_command(checkpoint, onnx_dir)
    sessions = {
        name: OrtSession(onnx_dir / spec.file, providers, fix)
        for name, spec in manifest.graphs.items()
    }
    return GraphRuntime(checkpoint, manifest, sessions, "onnxruntime", torch.device("cpu"))
