"""TensorRT backend. Everything that needs no TensorRT (optimisation profiles from the
manifest, engine cache keys, the errors for a missing or mismatched engine) runs everywhere;
building and running engines runs where ``import tensorrt`` works and a GPU is present, and is
reported as skipped elsewhere."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from helpers import DEMO_MODEL

from segllm_ros.runtime.manifest import DeploymentError, Manifest
from segllm_ros.runtime.tensorrt import EngineKey, find_engine, profile_shapes, write_key

KEY = EngineKey("llm", "ab" * 32, "10.3.0", "8.7", "fp16")


def test_profiles_cover_the_dynamic_axes_from_the_manifest(demo_onnx):
    manifest = Manifest.read(demo_onnx)
    llm = profile_shapes(manifest.graphs["llm"], manifest.limits)
    limit = manifest.limits["past"]
    assert llm["inputs_embeds"] == ((1, 1, 128), (1, 64, 128), (1, limit, 128))
    assert llm["past.0.key"] == ((1, 4, 0, 32), (1, 4, 256, 32), (1, 4, limit, 32))
    assert set(llm) == {t.name for t in manifest.graphs["llm"].inputs}
    refs = profile_shapes(manifest.graphs["mask_encoder"], manifest.limits)
    assert refs["crops"] == ((1, 3, 64, 64), (1, 3, 64, 64), (4, 3, 64, 64))
    assert profile_shapes(manifest.graphs["sam_encoder"], manifest.limits) == {}  # static
    with pytest.raises(ValueError, match="no limit for dynamic axis 'seq'"):
        profile_shapes(manifest.graphs["llm"], {"past": 8})


def test_engine_cache_key_changes_with_each_part(tmp_path):
    # the same name in every process and release, so a cached engine is found again (a
    # key built on Python's per-process hash() would pass an in-process comparison)
    assert KEY.path(tmp_path) == tmp_path / "llm.fp16.7ebfa849ddcda44d.engine"
    others = [
        EngineKey("llm", "cd" * 32, "10.3.0", "8.7", "fp16"),
        EngineKey("llm", "ab" * 32, "8.6.1", "8.7", "fp16"),
        EngineKey("llm", "ab" * 32, "10.3.0", "9.0", "fp16"),
        EngineKey("llm", "ab" * 32, "10.3.0", "8.7", "int8"),
    ]
    assert len({KEY.digest, *(k.digest for k in others)}) == 5


def test_missing_or_mismatched_engine_names_the_build_command(tmp_path):
    with pytest.raises(
        DeploymentError,
        match=r"not found.*python -m segllm_ros.build_engines "
        r"--onnx /x --precision fp16",
    ):
        find_engine(tmp_path, KEY, "/x")
    old = EngineKey("llm", KEY.onnx_sha256, "8.6.1", "8.7", "fp16")
    old.path(tmp_path).write_bytes(b"engine")
    write_key(old, old.path(tmp_path))
    with pytest.raises(
        DeploymentError,
        match=r"built with TensorRT 8.6.1, this is TensorRT "
        r"10.3.0.*build_engines",
    ):
        find_engine(tmp_path, KEY, "/x")
    old.path(tmp_path).unlink()
    old.path(tmp_path).with_suffix(".json").unlink()
    other_gpu = EngineKey("llm", KEY.onnx_sha256, "10.3.0", "9.0", "fp16")
    other_gpu.path(tmp_path).write_bytes(b"engine")
    write_key(other_gpu, other_gpu.path(tmp_path))
    with pytest.raises(DeploymentError, match=r"compute capability 9.0, this one is 8.7"):
        find_engine(tmp_path, KEY, "/x")
    KEY.path(tmp_path).write_bytes(b"engine")
    assert find_engine(tmp_path, KEY, "/x") == KEY.path(tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_tensorrt_backend_without_tensorrt_fails_at_load(demo_onnx):
    from segllm_ros.engine.engine import load_engine

    with pytest.raises(DeploymentError, match="needs TensorRT's Python package"):
        load_engine(
            str(DEMO_MODEL),
            backend="tensorrt",
            engine_dir=str(demo_onnx),
            precision="fp16",
            device="cuda:0",
        )


def test_tensorrt_engines_build_once_and_match_torch(demo_onnx):
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from segllm_ros.engine.engine import SegLLMEngine, load_engine
    from segllm_ros.engine.history import Frame
    from segllm_ros.interface.mask_codec import mask_iou
    from segllm_ros.model.segllm import SegLLMModel
    from segllm_ros.runtime.tensorrt import build_engines
    from segllm_training.tabletop import TabletopConfig, generate_dataset

    paths = build_engines(demo_onnx, "fp32")
    stamps = {p: p.stat().st_mtime_ns for p in paths.values()}
    assert build_engines(demo_onnx, "fp32") == paths  # cached: not rebuilt
    assert {p: p.stat().st_mtime_ns for p in paths.values()} == stamps
    conv = next(
        c
        for c in generate_dataset(77, 40, TabletopConfig(min_rounds=6, max_rounds=6))
        if len(c.rounds) == 6
    )
    frame = Frame.create(conv.scene.image, 1, "table")
    trt = load_engine(
        str(DEMO_MODEL),
        backend="tensorrt",
        engine_dir=str(demo_onnx),
        precision="fp32",
        device="cuda:0",
    )
    ref = SegLLMEngine(SegLLMModel.from_pretrained(DEMO_MODEL))
    for r in conv.rounds:
        a = ref.segment("c", r.query, frame, r.ref_rounds)
        b = trt.segment("c", r.query, frame, r.ref_rounds)
        assert a.ref_rounds == b.ref_rounds and mask_iou(a.mask, b.mask) >= 0.99
