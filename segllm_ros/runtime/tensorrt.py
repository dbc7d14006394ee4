"""TensorRT backend: engines built from the exported ONNX graphs, cached, run on CUDA buffers.

Written against the documented TensorRT Python API (8.6/10.x: ``Builder``, ``OnnxParser``,
``IBuilderConfig.set_memory_pool_limit``, optimisation profiles, ``IInt8EntropyCalibrator2``,
``execute_async_v3``). ``tensorrt`` is imported only where an engine is built or run; the
cache keys, engine lookup and profile shapes are plain Python, checked on any machine.

An engine is valid for one ONNX file, one TensorRT version, one GPU compute capability and
one precision, so those four make the cache key; a cached engine is never rebuilt unless
``force`` is given.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from segllm_ros.model import transforms as T
from segllm_ros.model.processing import sam_pixels
from segllm_ros.runtime.graph_runtime import TORCH_DTYPES, GraphRuntime
from segllm_ros.runtime.manifest import DeploymentError, GraphSpec, Manifest

TRT_PRECISIONS = ("fp32", "fp16", "int8")
INT8_GRAPHS = ("vision", "sam_encoder")
"""Graphs calibrated to int8 from sample frames; the others run fp16 under ``int8`` (their
inputs are LLM states, which a frame-fed calibrator cannot represent)."""
ENGINE_DIR = "engines"
"""Default cache: ``<onnx dir>/engines``."""


def build_command(onnx_dir: str | Path, precision: str, force: bool = False) -> str:
    return f"python -m segllm_ros.build_engines --onnx {onnx_dir} --precision {precision}" + (
        " --force" if force else ""
    )


# ---------------------------------------------------------------------- cache keys
@dataclass(frozen=True)
class EngineKey:
    """What an engine is valid for."""

    graph: str
    onnx_sha256: str
    trt_version: str
    compute_capability: str  # "8.7" (Jetson Orin), "9.0" (H100)
    precision: str

    @property
    def digest(self) -> str:
        text = "|".join(
            (self.onnx_sha256, self.trt_version, self.compute_capability, self.precision)
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def path(self, cache_dir: str | Path) -> Path:
        return Path(cache_dir) / f"{self.graph}.{self.precision}.{self.digest}.engine"


def write_key(key: EngineKey, engine_path: Path) -> None:
    """A sidecar JSON beside the engine: explains a mismatch without deserialising it."""
    engine_path.with_suffix(".json").write_text(json.dumps(asdict(key), indent=1) + "\n")


def find_engine(cache_dir: str | Path, key: EngineKey, onnx_dir: str | Path) -> Path:
    """The cached engine for ``key``; otherwise a ``DeploymentError`` that says why none fits
    (none built, another TensorRT version, another GPU, another export) and how to rebuild."""
    path = key.path(cache_dir)
    if path.is_file():
        return path
    fix = build_command(onnx_dir, key.precision)
    for sidecar in sorted(Path(cache_dir).glob(f"{key.graph}.{key.precision}.*.json")):
        try:
            other = EngineKey(**json.loads(sidecar.read_text()))
        except (ValueError, TypeError):
            continue
        if other.onnx_sha256 == key.onnx_sha256 and other.trt_version != key.trt_version:
            raise DeploymentError(
                f"{sidecar.with_suffix('.engine')} was built with TensorRT {other.trt_version}"
                f", this is TensorRT {key.trt_version}; engines are not portable across "
                f"versions: rebuild with `{fix}`"
            )
        if (
            other.onnx_sha256 == key.onnx_sha256
            and other.compute_capability != key.compute_capability
        ):
            raise DeploymentError(
                f"{sidecar.with_suffix('.engine')} was built for a GPU of compute capability "
                f"{other.compute_capability}, this one is {key.compute_capability}: rebuild "
                f"on this machine with `{fix}`"
            )
    raise DeploymentError(
        f"{path} not found: no {key.precision} TensorRT engine for the "
        f"{key.graph} graph of {onnx_dir} on this GPU/TensorRT; build it "
        f"with `{fix}`"
    )


# ------------------------------------------------------------------ profile shapes
def profile_shapes(
    spec: GraphSpec, limits: dict[str, int], opt: dict[str, int] | None = None
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape of every input with dynamic axes, from the manifest: ``past``
    may be empty (first round), ``seq`` and ``refs`` hold at least one; ``opt`` defaults to
    a typical round (64 new tokens, 256 cached, one reference)."""
    opt = {"seq": 64, "past": 256, "refs": 1, **(opt or {})}
    low = {"past": 0}
    shapes = {}
    for t in spec.inputs:
        if all(isinstance(d, int) for d in t.shape):
            continue
        lo, mid, hi = [], [], []
        for d in t.shape:
            if isinstance(d, int):
                lo.append(d), mid.append(d), hi.append(d)
                continue
            if d not in limits:
                raise ValueError(f"no limit for dynamic axis {d!r} of {t.name}")
            lo.append(low.get(d, 1))
            hi.append(limits[d])
            mid.append(min(max(opt.get(d, 1), lo[-1]), hi[-1]))
        shapes[t.name] = (tuple(lo), tuple(mid), tuple(hi))
    return shapes


# --------------------------------------------------------------------------- build
def _trt():
    try:
        import tensorrt
    except ImportError:
        raise DeploymentError(
            "the tensorrt backend needs TensorRT's Python package "
            "(JetPack ships it; on x86 install it from NVIDIA); use "
            "backend onnxruntime or torch where it is absent"
        ) from None
    return tensorrt


def gpu_key_parts(device: int = 0) -> tuple[str, str]:
    """(TensorRT version, compute capability) of this machine."""
    major, minor = torch.cuda.get_device_capability(device)
    return _trt().__version__, f"{major}.{minor}"


def calibration_batches(
    graph: str, frames: Iterable[np.ndarray], manifest: Manifest
) -> list[torch.Tensor]:
    """Sample camera frames preprocessed exactly as the runtime feeds ``graph``."""
    size = int(manifest.graphs[graph].inputs[0].shape[-1])
    batches = []
    for frame in frames:
        img = T.to_tensor(frame)[None]
        batches.append(T.clip_batch(img, size) if graph == "vision" else sam_pixels(img, size))
    return batches


def _calibrator(batches: list[torch.Tensor], cache_file: Path):
    trt = _trt()

    class FrameCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds preprocessed sample frames, one per batch; keeps TensorRT's table on disk."""

        def __init__(self) -> None:
            super().__init__()
            self.batches = [b.cuda().contiguous() for b in batches]
            self.index = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            if self.index >= len(self.batches):
                return None
            self.index += 1
            return [int(self.batches[self.index - 1].data_ptr())]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_file.write_bytes(bytes(cache))

    return FrameCalibrator()


def build_engine(
    onnx_path: Path,
    spec: GraphSpec,
    limits: dict[str, int],
    precision: str,
    out: Path,
    workspace_bytes: int,
    calibration: list[torch.Tensor] | None,
) -> Path:
    """Parse one ONNX graph and serialise a TensorRT engine for it to ``out``."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeploymentError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8" and calibration:
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(calibration, out.with_suffix(".calib"))
    shapes = profile_shapes(spec, limits)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, mid, hi) in shapes.items():
            profile.set_shape(name, lo, mid, hi)
        config.add_optimization_profile(profile)
        if precision == "int8" and calibration:
            config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeploymentError(f"TensorRT failed to build an engine from {onnx_path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(serialized))
    return out


def build_engines(
    onnx_dir: str | Path,
    precision: str = "fp16",
    cache_dir: str | Path | None = None,
    workspace_gb: float = 4.0,
    calibration_frames: list[np.ndarray] | None = None,
    force: bool = False,
    device: int = 0,
) -> dict[str, Path]:
    """Every graph of an export as an engine in the cache; cached ones are kept unless
    ``force``. Returns the engine path per graph."""
    if precision not in TRT_PRECISIONS:
        raise ValueError(f"precision must be one of {TRT_PRECISIONS}")
    onnx_dir = Path(onnx_dir)
    manifest = Manifest.read(onnx_dir)
    manifest.check(onnx_dir, None)
    cache_dir = Path(cache_dir) if cache_dir else onnx_dir / ENGINE_DIR
    if precision == "int8" and not calibration_frames:
        raise ValueError("int8 needs sample frames for calibration (--calibration-frames)")
    version, capability = gpu_key_parts(device)
    paths = {}
    for name, spec in manifest.graphs.items():
        graph_precision = precision if precision != "int8" or name in INT8_GRAPHS else "fp16"
        key = EngineKey(name, spec.sha256, version, capability, precision)
        path = key.path(cache_dir)
        if force or not path.is_file():
            calib = (
                calibration_batches(name, calibration_frames, manifest)
                if graph_precision == "int8"
                else None
            )
            build_engine(
                onnx_dir / spec.file,
                spec,
                manifest.limits,
                graph_precision,
                path,
                int(workspace_gb * (1 << 30)),
                calib,
            )
            write_key(key, path)
        paths[name] = path
    return paths


# ------------------------------------------------------------------------- runtime
class TrtSession:
    """One engine behind the ``Session`` protocol; inputs and outputs are CUDA tensors."""

    def __init__(self, path: Path, device: torch.device, fix: str) -> None:
        trt = _trt()
        self.device = device
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise DeploymentError(
                f"{path} cannot be deserialised (corrupt, or built by "
                f"another TensorRT): rebuild with `{fix}`"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self.dtypes = {
            n: TORCH_DTYPES[np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))).name]
            for n in names
        }
        self._dummy = torch.zeros(1, device=device)  # address for empty (first-round) tensors

    def _bind(self, name: str, tensor: torch.Tensor) -> None:
        self.context.set_tensor_address(
            name, tensor.data_ptr() if tensor.numel() else self._dummy.data_ptr()
        )

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {
            n: feeds[n].to(self.device, self.dtypes[n]).contiguous() for n in self.input_names
        }
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self._bind(name, tensor)
        outputs = {
            n: torch.empty(
                tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n], device=self.device
            )
            for n in self.output_names
        }
        for name, tensor in outputs.items():
            self._bind(name, tensor)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return outputs


def load_tensorrt(
    checkpoint: str | Path,
    onnx_dir: str | Path,
    precision: str = "fp16",
    device: str = "cuda:0",
    cache_dir: str | Path | None = None,
) -> GraphRuntime:
    """Open the cached engines of an export (configure time); never builds."""
    if precision not in TRT_PRECISIONS:
        raise ValueError(f"tensorrt precision must be one of {TRT_PRECISIONS}")
    onnx_dir = Path(onnx_dir)
    manifest = Manifest.read(onnx_dir)
    manifest.check(onnx_dir, checkpoint)
    _trt()
    if not device.startswith("cuda"):
        raise DeploymentError(f"the tensorrt backend runs on a CUDA device, not {device!r}")
    dev = torch.device(device)
    version, capability = gpu_key_parts(dev.index or 0)
    cache_dir = Path(cache_dir) if cache_dir else onnx_dir / ENGINE_DIR
    fix = build_command(onnx_dir, precision, force=True)
    sessions = {}
    for name, spec in manifest.graphs.items():
        key = EngineKey(name, spec.sha256, version, capability, precision)
        sessions[name] = TrtSession(find_engine(cache_dir, key, onnx_dir), dev, fix)
    return GraphRuntime(checkpoint, manifest, sessions, "tensorrt", dev)
