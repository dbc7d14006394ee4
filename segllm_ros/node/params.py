"""The node's parameters: one dataclass holds names, defaults and descriptions.

``config/segllm.yaml`` carries the same defaults for ``--params-file`` / the launch file; a
test keeps the two identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def _p(default: Any, description: str, read_only: bool = False) -> Any:
    return field(default=default, metadata={"description": description, "read_only": read_only})


@dataclass
class NodeParams:
    model_path: str = _p("", "SegLLM checkpoint folder; empty = the bundled demo model", True)
    backend: str = _p("torch", "inference runtime: torch, onnxruntime or tensorrt", True)
    engine_dir: str = _p("", "ONNX export folder (python -m segllm_ros.export); TensorRT "
                             "engines are cached in its engines/; empty = <model_path>/onnx",
                         True)
    device: str = _p("cpu", "torch device, e.g. cpu or cuda:0", True)
    precision: str = _p("fp32", "torch: fp32, fp16 or bf16; onnxruntime: the export's "
                                "(fp32); tensorrt: fp32, fp16 or int8", True)
    mode: str = _p("cached", "cached: KV cache + per-frame features; recompute: rebuild each round",
                   True)
    generate_text: bool = _p(False, "generate the answer text with the LLM (else a fixed answer)")
    mask_threshold: float = _p(0.0, "threshold on mask logits")
    image_transport: str = _p("raw", "raw: subscribe to image; compressed: image/compressed",
                              True)
    max_image_age: float = _p(2.0, "seconds; frames older than this (by header stamp vs the "
                                   "node clock) are refused; 0 = no limit")
    stamp_tolerance: float = _p(0.05, "seconds; IMAGE_BY_STAMP accepts the closest frame "
                                      "within this")
    frame_buffer_size: int = _p(30, "frames kept for IMAGE_BY_STAMP", True)
    max_image_pixels: int = _p(4096 * 4096, "larger images are refused as BAD_IMAGE")
    queue_size: int = _p(8, "queries waiting for the model; more are rejected (QUEUE_FULL)", True)
    max_query_chars: int = _p(1000, "longer query texts are refused (BAD_QUERY)")
    max_conversations: int = _p(16, "live conversations; the least recently used is dropped",
                                True)
    max_rounds: int = _p(32, "rounds per conversation; more need a reset", True)
    conversation_ttl: float = _p(600.0, "seconds idle before a conversation is dropped; 0 = never",
                                 True)
    default_conversation: str = _p("default", "conversation driven by the query_text topic")
    state_dir: str = _p("", "folder where conversations are saved after each round and "
                            "restored at start; empty = memory only", True)
    publish_overlay: bool = _p(True, "publish the overlay image (only while subscribed)")

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str, bool]]:
        """(name, default, description, read_only) for every parameter."""
        return [(f.name, f.default, f.metadata["description"], f.metadata["read_only"])
                for f in fields(cls)]
