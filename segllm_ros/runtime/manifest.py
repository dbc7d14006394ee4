"""The deployment manifest: which graphs an export holds, their tensors, and where they came
from. Every backend that runs exported graphs checks it at load (configure) time, so a stale
or broken deployment fails before the first frame with the command that fixes it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
GRAPHS = ("vision", "mask_encoder", "sam_encoder", "token_embed", "llm", "lm_head", "mask_decoder")
"""Every export holds these graphs (``segllm_ros.export.graphs`` defines them)."""
CHECKPOINT_FILES = ("config.json", "model.safetensors")
"""What the checkpoint hash covers: the architecture and the weights."""


class DeploymentError(RuntimeError):
    """An exported graph, engine or manifest that cannot be used; the message names the file
    and the command that rebuilds it."""


def export_command(checkpoint: str | Path, out: str | Path) -> str:
    return f"python -m segllm_ros.export --checkpoint {checkpoint} --out {out}"


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_sha256(directory: str | Path) -> str:
    """One hash over the checkpoint's config and weights (file names included)."""
    digest = hashlib.sha256()
    for name in CHECKPOINT_FILES:
        digest.update(name.encode())
        digest.update(bytes.fromhex(file_sha256(Path(directory) / name)))
    return digest.hexdigest()


@dataclass
class TensorSpec:
    name: str
    shape: list[int | str]  # ints are fixed, strings name a dynamic axis
    dtype: str  # NumPy name: float32, float16, int64


@dataclass
class GraphSpec:
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphSpec:
        return cls(
            data["file"],
            data["sha256"],
            [TensorSpec(**t) for t in data["inputs"]],
            [TensorSpec(**t) for t in data["outputs"]],
        )


@dataclass
class Manifest:
    checkpoint: str  # path the export was made from (informational)
    checkpoint_sha256: str
    precision: str
    opset: int
    exporter: str
    graphs: dict[str, GraphSpec]
    limits: dict[str, int] = field(default_factory=dict)  # max sizes of the dynamic axes
    format: int = FORMAT_VERSION

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """The manifest of an export folder; ``DeploymentError`` if absent or unreadable."""
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise DeploymentError(
                f"{path} not found: {directory} holds no SegLLM export; "
                f"create it with `{export_command('<checkpoint>', directory)}`"
            )
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {data.get('format')}, expected {FORMAT_VERSION}")
            graphs = {k: GraphSpec.from_dict(v) for k, v in data.pop("graphs").items()}
            manifest = cls(graphs=graphs, **data)
        except (ValueError, KeyError, TypeError) as err:
            raise DeploymentError(
                f"{path} is not a valid manifest ({err}); re-export with "
                f"`{export_command('<checkpoint>', directory)}`"
            ) from None
        missing = [g for g in GRAPHS if g not in manifest.graphs]
        if missing:
            raise DeploymentError(
                f"{path} lacks graphs {missing}; re-export with "
                f"`{export_command(manifest.checkpoint, directory)}`"
            )
        return manifest

    def check(self, directory: str | Path, checkpoint: str | Path | None) -> None:
        """Configure-time checks: the export belongs to ``checkpoint`` (when its weights are
        at hand) and every graph file is present and intact."""
        directory = Path(directory)
        fix = export_command(checkpoint or self.checkpoint, directory)
        weights = Path(checkpoint or "") / CHECKPOINT_FILES[1]
        if (
            checkpoint is not None
            and weights.is_file()
            and checkpoint_sha256(checkpoint) != self.checkpoint_sha256
        ):
            raise DeploymentError(
                f"{directory / MANIFEST_NAME} was exported from another checkpoint "
                f"({self.checkpoint}), not {checkpoint}; re-export with `{fix}`"
            )
        for name, spec in self.graphs.items():
            path = directory / spec.file
            if not path.is_file():
                raise DeploymentError(f"{path} ({name} graph) is missing; re-export with `{fix}`")
            if file_sha256(path) != spec.sha256:
                raise DeploymentError(
                    f"{path} ({name} graph) is corrupt or was changed after "
                    f"export (hash differs from the manifest); re-export "
                    f"with `{fix}`"
                )
