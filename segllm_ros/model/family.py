"""Model families: a checkpoint's ``config.json`` names its family (``"family"``, absent =
``DEFAULT_FAMILY``), and the family's class builds and loads it. Adding a family = one module
with a class that has ``from_pretrained(directory, device)`` + one entry here."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from torch import nn

CONFIG_NAME = "config.json"
DEFAULT_FAMILY = "segllm-sam"
FAMILIES: dict[str, str] = {
    "segllm-sam": "segllm_ros.model.segllm:SegLLMModel",  # LLaVA-style LLM + SAM decoder
    # the authors' released checkpoints (LLaVA-1.5-7B + HIPIE-R50), their own config.json
    "segllm-hipie": "segllm_ros.model.released.model:ReleasedSegLLM",
}
"""Family name -> ``module:Class``, imported only when a checkpoint of that family loads."""
MODEL_TYPE_FAMILIES: dict[str, str] = {"llava": "segllm-hipie"}
"""Configs written by other code name no family: their ``model_type`` tells it."""


def register_family(name: str, target: str) -> None:
    """Add a family (``target`` is ``module:Class``)."""
    if name in FAMILIES:
        raise ValueError(f"model family {name!r} is already registered")
    FAMILIES[name] = target


def family_class(name: str) -> type[nn.Module]:
    """The class of family ``name``; a ``ValueError`` listing the families if unknown."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; one of {sorted(FAMILIES)}")
    module, _, cls = FAMILIES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def checkpoint_family(directory: str | Path) -> str:
    """The family named by a checkpoint folder's config (or by its ``model_type``)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a SegLLM checkpoint: no {CONFIG_NAME}")
    data = json.loads(path.read_text())
    default = MODEL_TYPE_FAMILIES.get(data.get("model_type"), DEFAULT_FAMILY)
    return data.get("family", default)


def load_pretrained(directory: str | Path, device: str = "cpu") -> nn.Module:
    """The model in a checkpoint folder, built by its family's class, in eval mode."""
    return family_class(checkpoint_family(directory)).from_pretrained(directory, device=device)
