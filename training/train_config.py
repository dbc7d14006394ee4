"""One YAML file per experiment -> :class:`TrainConfig` (nested dataclasses, unknown keys are
errors so a typo never silently falls back to a default).

Top-level sections: ``model`` (:class:`ModelSource`), ``trainable``, ``data``, ``optim``,
``loss`` and the run settings; see ``config/train/*.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segllm_training.build import ModelSource, TrainableSettings
from segllm_training.data import SampleConfig, SourceConfig
from segllm_training.losses import LossWeights

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class DataSettings:
    sources: list[SourceConfig] = field(default_factory=list)
    mixing: str = "uniform"                  # uniform per source (upstream) | proportional
    sample: SampleConfig = field(default_factory=SampleConfig)


@dataclass
class OptimSettings:
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = 1


@dataclass
class TrainConfig:
    model: ModelSource = field(default_factory=ModelSource)
    trainable: TrainableSettings = field(default_factory=TrainableSettings)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    loss: LossWeights = field(default_factory=LossWeights)
    seed: int = 0
    max_steps: int = 1000
    per_device_batch: int = 2                # global batch = this x processes x grad_accum
    precision: str = "fp32"                  # autocast on GPU: bf16 | fp16
    frozen_dtype: str = "fp32"               # frozen weights stored in bf16 to save memory
    gradient_checkpointing: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    max_bad_steps: int = 5                   # consecutive non-finite steps before giving up
    threads: int = 0                         # torch CPU threads (0: leave the default)

    def __post_init__(self) -> None:
        for name in ("precision", "frozen_dtype"):
            if getattr(self, name) not in PRECISIONS:
                raise ValueError(f"{name} must be one of {PRECISIONS}")
        if self.frozen_dtype != "fp32" and self.precision == "fp32":
            raise ValueError("frozen_dtype below fp32 needs autocast (precision bf16/fp16)")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return from_dict(cls, yaml.safe_load(Path(path).read_text()) or {})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(cls: type, data: Any) -> Any:
    """Build dataclass ``cls`` from plain YAML data, recursing into dataclass-typed fields
    and ``list[dataclass]``; unknown keys raise ``ValueError`` naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value)
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value)
    origin = typing.get_origin(hint)
    if origin is list and value is not None:
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in value]
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value)
    return value
