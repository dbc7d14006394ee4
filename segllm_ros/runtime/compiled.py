"""``torch.compile`` of the graphs the engine runs per frame (the CLIP and SAM image encoders)
and per round (the mask decoder), compiled and warmed up when the runtime is built so the
first camera frame pays no compilation, and cached on disk so a restart mostly reuses it.

The cache is inductor's own (FX graphs, generated kernels, autotuning results), put in a
folder of ours through ``TORCHINDUCTOR_CACHE_DIR``: torch's default is under /tmp, which a
robot loses at every boot. The default folder is ``$XDG_CACHE_HOME/segllm_ros/compile``
(``~/.cache/...``), not the model folder: that may be read-only (an installed share/), and
what is cached depends on the machine (GPU, compiler, torch), not only on the weights; torch
keys every entry by all of them, so models and machines may share the folder safely.

Modes. On a CPU inductor's default (max-autotune's C++ GEMM templates multiply the compile
time for little gain at these sizes). On CUDA the encoders are compute-bound (ViT GEMMs), so
``max-autotune-no-cudagraphs``: autotuned kernels, and no CUDA graphs, whose outputs live in
static buffers that the next replay overwrites while the engine keeps earlier frames'
embeddings. The mask decoder is launch-bound (small tensors, many kernels), so ``max-autotune``
with CUDA graphs, its outputs cloned before they leave.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from segllm_ros.model.segllm import SegLLMModel

__all__ = [
    "GRAPHS",
    "CompileReport",
    "GraphSet",
    "GraphWarmup",
    "compile_and_warm_up",
    "default_cache_dir",
]

_LOG = logging.getLogger(__name__)

GRAPHS = ("vision_tokens", "sam_encoder", "decode_masks")


@dataclass(frozen=True)
class GraphWarmup:
    """One graph's configure-time cost: wall time of its warm-up calls (compilation
    included) and inductor's FX-graph cache hits and misses meanwhile (none of either: the
    process had compiled code for this model's graphs already)."""

    seconds: float
    cache_hits: int
    cache_misses: int


@dataclass(frozen=True)
class CompileReport:
    cache_dir: str
    graphs: dict[str, GraphWarmup]

    @property
    def cache_hit(self) -> bool:
        """Nothing was compiled afresh: every graph came from the on-disk cache (or, for a
        model this process compiled before, from dynamo's own in-memory code cache)."""
        return all(g.cache_misses == 0 for g in self.graphs.values())

    @property
    def total_s(self) -> float:
        return sum(g.seconds for g in self.graphs.values())

    def summary(self) -> str:
        parts = ", ".join(f"{name} {g.seconds:.1f} s" for name, g in self.graphs.items())
        cache = "hit" if self.cache_hit else "miss"
        return f"compiled graphs in {self.total_s:.1f} s ({parts}; cache {cache}: {self.cache_dir})"


@dataclass(frozen=True)
class GraphSet:
    """The graphs the runtime calls per frame and per round, with the model's signatures:
    its own methods (``eager``) or their compiled versions."""

    vision_tokens: Callable[[torch.Tensor], torch.Tensor]
    sam_encoder: Callable[[torch.Tensor], torch.Tensor]
    decode_masks: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

    @classmethod
    def eager(cls, model: SegLLMModel) -> GraphSet:
        return cls(model.vision_tokens, model.sam_encoder, model.decode_from_seg)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segllm_ros" / "compile"


def _modes(device: torch.device) -> tuple[str, str]:
    """(encoders' mode, mask decoder's mode); see the module docstring."""
    if device.type == "cuda":
        return "max-autotune-no-cudagraphs", "max-autotune"
    return "default", "default"


def compile_and_warm_up(model: SegLLMModel, cache_dir: str = "") -> tuple[GraphSet, CompileReport]:
    """Compile the model's encoders and mask decoder for its device and dtype, with inductor's
    cache in ``cache_dir`` (empty: ``default_cache_dir()``; the setting is process-wide), and
    warm them up on inputs of the shapes the engine feeds them."""
    if not isinstance(model, SegLLMModel):
        raise ValueError(
            f"compile_graphs supports the {SegLLMModel.family} family, not {model.family!r}"
        )
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder.resolve())
    with torch.inference_mode():
        # transformers installs its output-capturing hooks at a model's first call: an eager
        # call does it here, so that no compiled graph breaks on it or depends on hook ids
        model.vision_tokens(_zeros(model, 1, 3, model.clip_size, model.clip_size))
    encoder_mode, decoder_mode = _modes(model.device)
    decoder = torch.compile(model.decode_from_seg, mode=decoder_mode, dynamic=False)

    def decode_masks(*args: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        # a CUDA graph's outputs are overwritten by its next replay
        return tuple(t.clone() for t in decoder(*args))

    graphs = GraphSet(
        vision_tokens=torch.compile(model.vision_tokens, mode=encoder_mode, dynamic=False),
        sam_encoder=torch.compile(model.sam_encoder, mode=encoder_mode, dynamic=False),
        decode_masks=decode_masks,
    )
    report = CompileReport(str(folder), _warm_up(graphs, model))
    _LOG.info(report.summary())
    return graphs, report


def _warm_up(graphs: GraphSet, model: SegLLMModel) -> dict[str, GraphWarmup]:
    """Run each graph as the engine will (inference mode, batch 1, the model's dtype; the mask
    decoder with and without referenced masks), timing it and counting cache lookups."""
    device = model.device
    clip, sam, hidden = model.clip_size, model.config.sam.image_size, model.hidden_size
    results: dict[str, GraphWarmup] = {}
    outputs: dict[str, torch.Tensor] = {}

    def timed(name: str, *calls: Callable[[], torch.Tensor | tuple]) -> None:
        hits, misses = _cache_counts()
        start = time.perf_counter()
        for call in calls:
            out = call()
            outputs[name] = out if isinstance(out, torch.Tensor) else out[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        now_hits, now_misses = _cache_counts()
        results[name] = GraphWarmup(seconds, now_hits - hits, now_misses - misses)

    with torch.inference_mode():
        timed("vision_tokens", lambda: graphs.vision_tokens(_zeros(model, 1, 3, clip, clip)))
        timed("sam_encoder", lambda: graphs.sam_encoder(_zeros(model, 1, 3, sam, sam)))
        embedding = outputs["sam_encoder"]
        # two tensors, not one twice: dynamo guards on inputs aliasing one another
        seg, turn = _zeros(model, 1, hidden), _zeros(model, 1, hidden)
        refs = torch.zeros(1, sam, sam, device=device, dtype=torch.bool)
        timed(
            "decode_masks",
            lambda: graphs.decode_masks(embedding, seg, turn, None),
            lambda: graphs.decode_masks(embedding, seg, turn, refs),
        )
    return results


def _zeros(model: SegLLMModel, *shape: int) -> torch.Tensor:
    return torch.zeros(shape, device=model.device, dtype=model.dtype)


def _cache_counts() -> tuple[int, int]:
    """Inductor's FX-graph cache (hits, misses); a graph it cannot cache (a bypass) is
    compiled afresh too, so it counts as a miss."""
    inductor = counters["inductor"]
    return (
        inductor["fxgraph_cache_hit"],
        inductor["fxgraph_cache_miss"] + inductor["fxgraph_cache_bypass"],
    )
