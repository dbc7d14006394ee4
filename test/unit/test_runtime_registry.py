"""Backends, model families and precisions are chosen by name from one registry each: an
unknown name is a ValueError listing the choices, and adding an entry is all a new backend or
family needs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import DEMO_MODEL, random_image, tiny_model

from segllm_ros.engine.engine import load_engine
from segllm_ros.engine.history import Frame
from segllm_ros.model import family
from segllm_ros.model.segllm import SegLLMModel
from segllm_ros.runtime import registry
from segllm_ros.runtime.precision import PRECISIONS, torch_dtype
from segllm_ros.runtime.registry import Backend, load_runtime, register_backend
from segllm_ros.runtime.torch_runtime import TorchRuntime, load_torch


class EchoRuntime(TorchRuntime):
    """A stand-in third-party backend: the torch runtime under another name."""

    backend = "echo"


def load_echo(checkpoint: str, device: str = "cpu", precision: str = "fp32") -> EchoRuntime:
    return EchoRuntime(load_torch(checkpoint, device, precision).model)


class TaggedSegLLM(SegLLMModel):
    """A stand-in second model family."""

    family = "test-tagged"


def test_unknown_backend_lists_the_choices():
    with pytest.raises(
        ValueError,
        match=r"backend must be one of \['onnxruntime', 'tensorrt', "
        r"'torch'\], got 'openvino'",
    ):
        load_runtime(str(DEMO_MODEL), backend="openvino")


def test_a_registered_backend_serves_the_engine(monkeypatch):
    monkeypatch.setattr(registry, "BACKENDS", dict(registry.BACKENDS))
    register_backend("echo", Backend(f"{__name__}:load_echo", exported=False))
    with pytest.raises(ValueError, match="already registered"):
        register_backend("echo", Backend(f"{__name__}:load_echo", exported=False))
    engine = load_engine(str(DEMO_MODEL), backend="echo")
    assert engine.runtime.backend == "echo"
    result = engine.segment("c", "the red circle", Frame.create(random_image(64, 64), 1, "t"))
    assert result.round_index == 1 and result.mask.shape == (64, 64)


def test_precision_names_map_to_dtypes_once():
    assert torch_dtype("bf16") is torch.bfloat16 and set(PRECISIONS) == {"fp32", "fp16", "bf16"}
    with pytest.raises(ValueError, match=r"precision must be one of \['bf16', 'fp16', 'fp32'\]"):
        torch_dtype("int4")
    with pytest.raises(ValueError, match="precision must be one of"):
        load_runtime(str(DEMO_MODEL), precision="fp64")


def test_checkpoints_without_a_family_are_segllm_sam(tmp_path):
    legacy = tmp_path / "legacy"
    shutil.copytree(DEMO_MODEL, legacy)
    config = json.loads((legacy / "config.json").read_text())
    del config["family"]  # saved before families existed
    (legacy / "config.json").write_text(json.dumps(config))
    assert family.checkpoint_family(legacy) == family.DEFAULT_FAMILY == "segllm-sam"
    assert type(family.load_pretrained(legacy)) is SegLLMModel


def test_unknown_family_lists_the_choices(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["family"] == "segllm-sam"
    config["family"] = "segllm-future"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"unknown model family 'segllm-future'; one of "
        r"\['segllm-hipie', 'segllm-sam'\]",
    ):
        load_runtime(str(tmp_path))
    with pytest.raises(ValueError, match="holds a 'segllm-future' model"):
        SegLLMModel.from_pretrained(tmp_path)


def test_a_registered_family_loads_its_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(family, "FAMILIES", dict(family.FAMILIES))
    family.register_family("test-tagged", f"{__name__}:TaggedSegLLM")
    model = tiny_model(family="test-tagged")
    model.save_pretrained(tmp_path)
    loaded = family.load_pretrained(tmp_path)
    assert type(loaded) is TaggedSegLLM
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert load_runtime(str(tmp_path)).model.family == "test-tagged"
