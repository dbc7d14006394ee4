"""One YAML file per experiment -> :class:`TrainConfig` (nested dataclasses, unknown keys are
errors so a typo never silently falls back to a default).

Top-level sections: ``model`` (:class:`ModelSource`), ``trainable``, ``data``, ``optim``,
``loss`` and the run settings; see ``config/train/*.yaml``. ``extends: FILE`` (relative to
the experiment file) starts from another experiment and changes what is listed, e.g. a
recipe's second stage; command-line ``--set section.key=value`` overrides go on top.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segllm_training.trainer.build import ModelSource, TrainableSettings
from segllm_training.trainer.data import SampleConfig, SourceConfig
from segllm_training.trainer.losses import LossWeights
from segllm_training.trainer.merge import merged

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class DataSettings:
    sources: list[SourceConfig] = field(default_factory=list)
    mixing: str = "uniform"  # uniform per source (upstream) | proportional
    sample: SampleConfig = field(default_factory=SampleConfig)
    stream: bool = False
    """The demo recipe's order: one tabletop source, conversations drawn one after another
    from one generator seeded with the run's ``seed``, whole conversations with a mask loss on
    every round, the reference-token dropout drawn by the model (``sample`` does not apply).
    Otherwise every sample is a pure function of (seed, index) (:class:`MixtureSampler`)."""


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
    per_device_batch: int = 2  # global batch = this x processes x grad_accum
    precision: str = "fp32"  # autocast on GPU: bf16 | fp16
    frozen_dtype: str = "fp32"  # frozen weights stored in bf16 to save memory
    gradient_checkpointing: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    max_bad_steps: int = 5  # consecutive non-finite steps before giving up
    threads: int = 0  # torch CPU threads (0: leave the default)
    flush_denormal: bool = False
    """Flush subnormal floats to zero on CPU: saturated sigmoids and softmaxes fill the
    backward pass of a trained tabletop model with them, and x86 handles them slowly (up to
    1.4x per step, ``bench/train_step.py``); only values below 1.2e-38 change."""
    keep_exports: bool = False
    """Also export the model at every checkpoint to ``out/steps/STEP`` (to follow a run, e.g.
    ``shape_probe --trajectory``); ``out/final`` is always written."""

    def __post_init__(self) -> None:
        for name in ("precision", "frozen_dtype"):
            if getattr(self, name) not in PRECISIONS:
                raise ValueError(f"{name} must be one of {PRECISIONS}")
        if self.frozen_dtype != "fp32" and self.precision == "fp32":
            raise ValueError("frozen_dtype below fp32 needs autocast (precision bf16/fp16)")

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
        """The experiment in ``path`` (with the one it ``extends``); ``overrides`` are
        ``dotted.key=value`` strings, the value in YAML, e.g. ``optim.lr=0.0006``."""
        data = read_experiment(Path(path))
        for override in overrides:
            key, sep, value = override.partition("=")
            if not sep or not key or key.startswith(".") or key.endswith("."):
                raise ValueError(f"override {override!r} is not KEY=VALUE (e.g. optim.lr=1e-3)")
            tree = yaml.safe_load(value)
            for name in reversed(key.split(".")):
                tree = {name: tree}
            data = merged(data, tree)
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_experiment(path: Path) -> dict:
    """The YAML data of ``path`` on top of the file it ``extends``; ``model.config_file`` is
    made absolute against the file that names it."""
    data = yaml.safe_load(path.read_text()) or {}
    model = data.get("model") or {}
    if model.get("config_file"):
        model["config_file"] = str((path.parent / model["config_file"]).resolve())
    base = data.pop("extends", None)
    return merged(read_experiment(path.parent / base), data) if base else data


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
