"""ONNX export and the ONNX Runtime backend on the bundled demo model: the graphs pass
``onnx.checker``, the LLM graph extends a KV cache, a six-round conversation gives the same
rounds and masks as torch, and a broken deployment fails at load time with the fix.

Tolerances (fp32 graphs on CPU): mask IoU >= 0.99 per round; SAM low-res mask logits and
LM-head logits within 1e-3 absolute of torch (the parity test prints what it observes); IoU score
within 1e-4.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import DEMO_MODEL, tiny_model

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine, load_engine
from segllm_ros.engine.history import Frame
from segllm_ros.export.graphs import kv_names, llm_dims
from segllm_ros.interface.mask_codec import mask_iou
from segllm_ros.model.segllm import SegLLMModel
from segllm_ros.runtime.manifest import GRAPHS, DeploymentError, Manifest, checkpoint_sha256
from segllm_ros.runtime.onnxruntime import load_onnxruntime
from segllm_training.tabletop import TabletopConfig, generate_dataset

LOGIT_ATOL = 1e-3
IOU_MIN = 0.99


@pytest.fixture(scope="module")
def model():
    return SegLLMModel.from_pretrained(DEMO_MODEL)


@pytest.fixture(scope="module")
def ort_runtime(demo_onnx):
    return load_onnxruntime(DEMO_MODEL, demo_onnx)


@pytest.fixture(scope="module")
def conversation():
    cfg = TabletopConfig(min_rounds=6, max_rounds=6)
    return next(c for c in generate_dataset(77, 40, cfg) if len(c.rounds) == 6)


def record(runtime, method: str, log: list) -> None:
    """Keep every output of ``runtime.method`` (an instance attribute over the real one)."""
    real = getattr(runtime, method)

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        log.append(out)
        return out

    setattr(runtime, method, wrapper)


def converse(runtime, conversation, **config):
    """Six rounds; returns the results, the mask-decoder outputs and the LM-head logits."""
    decoded, logits = [], []
    record(runtime, "decode_masks", decoded)
    record(runtime, "lm_logits", logits)
    try:
        engine = SegLLMEngine(runtime, EngineConfig(**config))
        frame = Frame.create(conversation.scene.image, 1, "table")
        results = [engine.segment("c", r.query, frame, r.ref_rounds) for r in conversation.rounds]
    finally:
        del runtime.decode_masks, runtime.lm_logits
    return results, decoded, logits


def test_onnx_export_graphs_pass_the_checker_and_match_the_manifest(demo_onnx):
    manifest = Manifest.read(demo_onnx)
    assert set(manifest.graphs) == set(GRAPHS)
    assert manifest.checkpoint_sha256 == checkpoint_sha256(DEMO_MODEL)
    assert manifest.precision == "fp32" and manifest.opset >= 17
    for name, spec in manifest.graphs.items():
        onnx.checker.check_model(str(demo_onnx / spec.file), full_check=True)
        session = ort.InferenceSession(str(demo_onnx / spec.file))
        assert [i.name for i in session.get_inputs()] == [t.name for t in spec.inputs], name
        assert [o.name for o in session.get_outputs()] == [t.name for t in spec.outputs], name
    llm = {t.name: t.shape for t in manifest.graphs["llm"].inputs}
    assert llm["inputs_embeds"][1] == "seq" and llm["past.0.key"][2] == "past"
    assert {t.name: t.shape for t in manifest.graphs["mask_encoder"].inputs}["crops"][0] == "refs"


def test_onnx_llm_graph_feeds_only_new_tokens(demo_onnx, model):
    """Prefix, then two more chunks on its cache == one pass over everything == torch."""
    session = ort.InferenceSession(str(demo_onnx / "llm.onnx"))
    layers, heads, head_dim = llm_dims(model)
    hidden = model.llm.config.hidden_size
    embeds = torch.randn(1, 40, hidden, generator=torch.Generator().manual_seed(1)) * 0.02
    past = [np.zeros((1, heads, 0, head_dim), np.float32) for _ in range(2 * layers)]
    pieces = []
    for a, b in ((0, 30), (30, 31), (31, 40)):
        feeds = {
            "inputs_embeds": embeds[:, a:b].numpy(),
            **dict(zip(kv_names(layers, "past"), past, strict=True)),
        }
        out = session.run(None, feeds)
        pieces.append(out[0])
        past = out[1:]
        assert past[0].shape[2] == b
    with torch.no_grad():
        ref = model.llm_hidden(embeds).last_hidden_state.numpy()
    np.testing.assert_allclose(np.concatenate(pieces, 1), ref, atol=1e-4)


@pytest.mark.parametrize("generate_text", [False, True])
def test_onnx_parity_six_round_conversation(model, ort_runtime, conversation, generate_text):
    ref, ref_decoded, ref_logits = converse(
        SegLLMEngine(model).runtime, conversation, generate_text=generate_text
    )
    got, decoded, logits = converse(ort_runtime, conversation, generate_text=generate_text)
    assert len(got) == 6 and sum(r.found for r in ref) >= 5
    ious, mask_diffs = [], []
    for a, b, (la, *_), (lb, *_) in zip(ref, got, ref_decoded, decoded, strict=True):
        assert (b.round_index, b.ref_rounds, b.text) == (a.round_index, a.ref_rounds, a.text)
        assert (b.kind, len(b.segments)) == (a.kind, len(a.segments))
        ious.append(mask_iou(a.mask, b.mask))
        mask_diffs.append(float((la - lb).abs().max()))
        assert b.score == pytest.approx(a.score, abs=1e-4)
    assert min(ious) >= IOU_MIN and max(mask_diffs) <= LOGIT_ATOL
    assert len(logits) == len(ref_logits)
    if generate_text:
        assert logits and "<seg>" in got[0].text
    lm_diffs = [float((la - lb).abs().max()) for la, lb in zip(ref_logits, logits, strict=True)]
    assert max(lm_diffs, default=0.0) <= LOGIT_ATOL
    print(
        f"onnx parity: min mask IoU {min(ious):.4f}, max mask-logit diff "
        f"{max(mask_diffs):.1e}, max LM-logit diff {max(lm_diffs, default=0.0):.1e}"
    )


def test_onnx_runtime_recompute_mode_equals_cached(ort_runtime, conversation):
    cached, _, _ = converse(ort_runtime, conversation, mode="cached")
    recomputed, _, _ = converse(ort_runtime, conversation, mode="recompute")
    for a, b in zip(cached, recomputed, strict=True):
        assert a.ref_rounds == b.ref_rounds and mask_iou(a.mask, b.mask) >= IOU_MIN


# ------------------------------------------------------------------ bad input
def test_missing_export_names_the_export_command(tmp_path):
    with pytest.raises(DeploymentError, match=r"manifest.json not found.*segllm_ros.export"):
        load_engine(str(DEMO_MODEL), backend="onnxruntime", engine_dir=str(tmp_path))


@pytest.fixture
def broken_copy(demo_onnx, tmp_path):
    out = tmp_path / "onnx"
    shutil.copytree(demo_onnx, out)
    return out


def test_missing_graph_file_is_named(broken_copy):
    (broken_copy / "llm.onnx").unlink()
    with pytest.raises(
        DeploymentError,
        match=r"llm.onnx \(llm graph\) is missing.*"
        r"python -m segllm_ros.export --checkpoint",
    ):
        load_engine(str(DEMO_MODEL), backend="onnxruntime", engine_dir=str(broken_copy))


def test_corrupt_graph_file_is_named(broken_copy):
    path = broken_copy / "mask_decoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DeploymentError, match=r"mask_decoder.onnx .*corrupt.*re-export"):
        load_engine(str(DEMO_MODEL), backend="onnxruntime", engine_dir=str(broken_copy))


def test_unparsable_graph_fails_in_onnxruntime_at_load(broken_copy):
    """A graph whose manifest hash was rewritten too: ONNX Runtime refuses it at load."""
    from segllm_ros.runtime.manifest import file_sha256

    path = broken_copy / "vision.onnx"
    path.write_bytes(b"not a protobuf" * 10)
    manifest = Manifest.read(broken_copy)
    manifest.graphs["vision"].sha256 = file_sha256(path)
    manifest.save(broken_copy)
    with pytest.raises(DeploymentError, match=r"vision.onnx cannot be loaded by ONNX Runtime"):
        load_engine(str(DEMO_MODEL), backend="onnxruntime", engine_dir=str(broken_copy))


def test_manifest_from_another_checkpoint_is_refused(demo_onnx, tmp_path):
    other = tmp_path / "other_checkpoint"
    tiny_model(seed=3).save_pretrained(other)
    with pytest.raises(
        DeploymentError,
        match=r"exported from another checkpoint.*"
        r"--checkpoint .*other_checkpoint",
    ):
        load_engine(str(other), backend="onnxruntime", engine_dir=str(demo_onnx))


def test_corrupt_manifest_and_wrong_precision(broken_copy, demo_onnx):
    with pytest.raises(ValueError, match="fp32 graphs"):
        load_engine(
            str(DEMO_MODEL), backend="onnxruntime", engine_dir=str(demo_onnx), precision="fp16"
        )
    (broken_copy / "manifest.json").write_text("{ not json")
    with pytest.raises(DeploymentError, match=r"manifest.json is not a valid manifest"):
        load_engine(str(DEMO_MODEL), backend="onnxruntime", engine_dir=str(broken_copy))
