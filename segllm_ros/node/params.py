"""The node's parameters: one dataclass holds names, defaults, descriptions and when each
one may change.

``config/segllm.yaml`` carries the same defaults for ``--params-file`` / the launch file; a
test keeps the two identical.

When a parameter takes effect (``Apply``):
- RUNTIME: ``ros2 param set`` applies it at once, in any lifecycle state.
- CONFIGURE: it shapes the loaded model, the queue or the conversation store, so it may only
  be set while the node is unconfigured (after ``cleanup``); the next ``configure`` uses it.
- STARTUP: read-only (the node's subscriptions are created from it once, at start).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from segllm_ros.interface.image_codec import DEFAULT_MAX_PIXELS
from segllm_ros.model.quantize import QUANT_SCHEMES
from segllm_ros.runtime.registry import BACKENDS


class Apply(Enum):
    RUNTIME = "runtime"
    CONFIGURE = "configure"
    STARTUP = "startup"


@dataclass(frozen=True)
class Spec:
    """How a parameter may change: when, and within which range or choices."""

    apply: Apply
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def descriptor(self, description: str, default: Any) -> ParameterDescriptor:
        """A descriptor that tells ``ros2 param describe`` the range and when it applies;
        rclpy itself refuses values outside the range."""
        d = ParameterDescriptor(
            description=f"{description} [{self.apply.value}]", read_only=self.apply is Apply.STARTUP
        )
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.low is not None and isinstance(default, float):
            d.floating_point_range = [
                FloatingPointRange(from_value=float(self.low), to_value=float(self.high))
            ]
        elif self.low is not None and isinstance(default, int):
            d.integer_range = [
                IntegerRange(from_value=int(self.low), to_value=int(self.high), step=1)
            ]
        return d


def _p(
    default: Any,
    description: str,
    apply: Apply = Apply.CONFIGURE,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] = (),
) -> Any:
    return field(
        default=default,
        metadata={"description": description, "spec": Spec(apply, low, high, choices)},
    )


RUNTIME, STARTUP = Apply.RUNTIME, Apply.STARTUP


@dataclass
class NodeParams:
    model_path: str = _p("", "SegLLM checkpoint folder; empty = the bundled demo model")
    backend: str = _p(
        "torch",
        "inference runtime: " + ", ".join(sorted(BACKENDS)),
        choices=tuple(sorted(BACKENDS)),
    )
    engine_dir: str = _p(
        "",
        "ONNX export folder (python -m segllm_ros.export); TensorRT "
        "engines are cached in its engines/; empty = <model_path>/onnx",
    )
    device: str = _p("cpu", "torch device, e.g. cpu or cuda:0")
    precision: str = _p(
        "fp32",
        "torch: fp32, fp16 or bf16; onnxruntime: the export's (fp32); tensorrt: fp32, fp16 or int8",
        choices=("fp32", "fp16", "bf16", "int8"),
    )
    llm_quant: str = _p(
        "none",
        "torch: weight-only quantisation of the LLM (torchao): none, int8 or int4",
        choices=QUANT_SCHEMES,
    )
    llm_graphs: bool = _p(
        False, "torch: static KV-cache slots per conversation, replayed as CUDA graphs on a GPU"
    )
    compile_graphs: bool = _p(
        False, "torch: torch.compile the image encoders and mask decoder, warmed up at configure"
    )
    compile_cache_dir: str = _p(
        "", "torch: compile_graphs' on-disk cache; empty = ~/.cache/segllm_ros/compile"
    )
    mode: str = _p(
        "cached",
        "cached: KV cache + per-frame features; recompute: rebuild each round",
        choices=("cached", "recompute"),
    )
    generate_text: bool = _p(False, "generate the answer text with the LLM (else a fixed answer)")
    mask_threshold: float = _p(0.0, "threshold on mask logits", low=-100.0, high=100.0)
    image_transport: str = _p(
        "raw",
        "raw: subscribe to image; compressed: image/compressed",
        STARTUP,
        choices=("raw", "compressed"),
    )
    max_image_age: float = _p(
        2.0,
        "seconds; frames older than this (by header stamp vs the "
        "node clock) are refused; 0 = no limit",
        RUNTIME,
        0.0,
        86400.0,
    )
    stamp_tolerance: float = _p(
        0.05, "seconds; IMAGE_BY_STAMP accepts the closest frame within this", RUNTIME, 0.0, 60.0
    )
    frame_buffer_size: int = _p(30, "frames kept for IMAGE_BY_STAMP", low=1, high=1000)
    max_image_pixels: int = _p(
        DEFAULT_MAX_PIXELS, "larger images are refused as BAD_IMAGE", RUNTIME, 1, 2**31 - 1
    )
    queue_size: int = _p(
        8, "queries waiting for the model; more are rejected (QUEUE_FULL)", low=1, high=10000
    )
    max_query_chars: int = _p(
        1000, "longer query texts are refused (BAD_QUERY)", RUNTIME, 1, 1_000_000
    )
    max_conversations: int = _p(
        16, "live conversations; the least recently used is dropped", low=1, high=100000
    )
    max_rounds: int = _p(32, "rounds per conversation; more need a reset", low=1, high=10000)
    conversation_ttl: float = _p(
        600.0, "seconds idle before a conversation is dropped; 0 = never", low=0.0, high=1e9
    )
    default_conversation: str = _p(
        "default", "conversation driven by the query_text topic", RUNTIME
    )
    state_dir: str = _p(
        "",
        "folder where conversations are saved after each round and "
        "restored at start; empty = memory only",
    )
    publish_overlay: bool = _p(True, "publish the overlay image (only while subscribed)", RUNTIME)

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str, Spec]]:
        """(name, default, description, spec) for every parameter."""
        return [
            (f.name, f.default, f.metadata["description"], f.metadata["spec"]) for f in fields(cls)
        ]

    @classmethod
    def spec(cls, name: str) -> Spec:
        return next(s for n, _, _, s in cls.describe() if n == name)


def check_change(name: str, value: Any, configured: bool) -> str:
    """Why ``name := value`` cannot be applied now ('' when it can). Ranges are checked by
    rclpy from the descriptors; choices and the lifecycle rule are checked here."""
    spec = NodeParams.spec(name)
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, not {value!r}"
    if spec.apply is Apply.CONFIGURE and configured:
        return (
            f"{name} is applied when the node is configured: deactivate and clean up the "
            "node, set it, then configure again"
        )
    if name == "default_conversation" and not str(value).strip():
        return "default_conversation must not be empty"
    return ""
