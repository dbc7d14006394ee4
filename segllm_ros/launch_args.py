"""The launch file's arguments and how they become the node's parameters and command line.

Pure Python (no ``launch`` import), so the rule that matters on a robot is testable where
``launch``/``launch_ros`` are not installed: ``params_file`` is the node's configuration, and a
launch argument overrides one of its keys only when it was given on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping

PARAMS_FILE = "params_file"
"""Its default (the package's ``config/segllm.yaml``) is a substitution the launch file adds."""

ARGUMENTS: dict[str, tuple[str | None, str]] = {
    "namespace": ("segllm", "namespace of the node's topics, service and action"),
    "image_topic": ("/camera/image_raw", "camera topic (sensor_msgs/Image)"),
    PARAMS_FILE: (None, "node parameters (YAML); default: the package's config/segllm.yaml"),
    "model_path": ("", "SegLLM checkpoint folder; empty: params_file's (bundled demo model)"),
    "backend": ("", "inference runtime: torch, onnxruntime or tensorrt; empty: params_file's"),
    "engine_dir": ("", "ONNX export folder (engines/ inside); empty: params_file's"),
    "device": ("", "torch device, e.g. cuda:0; empty: params_file's"),
    "precision": (
        "",
        "fp32/fp16/bf16 (torch), fp32 (onnxruntime), fp32/fp16/int8 (tensorrt)"
        "; empty: params_file's",
    ),
    "mode": ("", "cached or recompute; empty: params_file's"),
    "llm_quant": (
        "",
        "torch: none, int8 or int4 weight-only LLM quantisation; empty: params_file's",
    ),
    "llm_graphs": (
        "",
        "torch: true for static KV slots replayed as CUDA graphs; empty: params_file's",
    ),
    "compile_graphs": (
        "",
        "torch: true to compile the image encoders and mask decoder at configure (cached in "
        "compile_cache_dir); empty: params_file's",
    ),
    "image_transport": (
        "",
        "raw, or compressed to read <image_topic>/compressed; empty: params_file's",
    ),
    "use_sim_time": ("", "true to follow /clock (rosbag play --clock); empty: params_file's"),
    "log_level": ("", "debug, info, warn, error or fatal; empty: the ROS default (info)"),
    "autostart": ("true", "false: the node stays unconfigured for a lifecycle manager"),
}

OVERRIDES = (
    "model_path",
    "backend",
    "engine_dir",
    "device",
    "precision",
    "mode",
    "llm_quant",
    "llm_graphs",
    "compile_graphs",
    "image_transport",
    "use_sim_time",
)
"""Launch arguments that set the node parameter of the same name, only when given."""

BOOL_OVERRIDES = ("llm_graphs", "compile_graphs", "use_sim_time")

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
_BOOLS = {"true": True, "false": False}


def _bool(name: str, value: str) -> bool:
    try:
        return _BOOLS[value.strip().lower()]
    except KeyError:
        raise ValueError(f"launch argument {name}:={value!r}: expected true or false") from None


def parameter_overrides(given: Mapping[str, str]) -> dict[str, str | bool]:
    """The node parameters that launch arguments set: only the non-empty ones, typed."""
    overrides: dict[str, str | bool] = {}
    for name in OVERRIDES:
        value = given.get(name, "")
        if value != "":
            overrides[name] = _bool(name, value) if name in BOOL_OVERRIDES else value
    return overrides


def node_arguments(given: Mapping[str, str]) -> list[str]:
    """Arguments for ``segllm_node`` itself (before ``--ros-args``)."""
    return [] if _bool("autostart", given.get("autostart", "true")) else ["--no-autostart"]


def ros_arguments(given: Mapping[str, str]) -> list[str]:
    """ROS arguments (after ``--ros-args``): the log level, when given."""
    level = given.get("log_level", "").strip().lower()
    if not level:
        return []
    if level not in LOG_LEVELS:
        raise ValueError(f"launch argument log_level:={level!r}: expected one of {LOG_LEVELS}")
    return ["--log-level", level]
