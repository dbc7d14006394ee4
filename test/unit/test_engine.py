"""The inference engine on the bundled demo model: cached rounds equal recomputed rounds,
state survives a restart, a failed round loses nothing, text generation uses the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DEMO_MODEL

from segllm_ros.engine.engine import (
    EngineConfig,
    SegLLMEngine,
    load_engine,
)
from segllm_ros.engine.frames import UnsupportedFrameError
from segllm_ros.engine.history import ConversationFullError, Frame
from segllm_ros.engine.persistence import ConversationArchive
from segllm_ros.engine.references import BadReferenceError
from segllm_ros.engine.store import ConversationStore
from segllm_ros.interface.mask_codec import mask_iou
from segllm_training.tabletop import TabletopConfig, generate_dataset


@pytest.fixture(scope="module")
def conversation():
    """A held-out six-round conversation (all reference forms occur across the set)."""
    cfg = TabletopConfig(min_rounds=6, max_rounds=6)
    return next(c for c in generate_dataset(77, 40, cfg) if len(c.rounds) == 6)


def run(engine: SegLLMEngine, conv, cid: str = "c", rounds=None, frame=None):
    frame = frame or Frame.create(conv.scene.image, 1, "table")
    return [engine.segment(cid, r.query, frame, r.ref_rounds) for r in (rounds or conv.rounds)]


def test_cached_rounds_equal_recomputed_rounds(model, conversation):
    cached = run(SegLLMEngine(model, EngineConfig(mode="cached")), conversation)
    recomputed = run(SegLLMEngine(model, EngineConfig(mode="recompute")), conversation)
    assert len(cached) == 6
    for a, b in zip(cached, recomputed, strict=True):
        assert a.ref_rounds == b.ref_rounds
        assert a.round_index == b.round_index
        assert a.mask.any() and mask_iou(a.mask, b.mask) >= 0.99
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_cached_mode_reuses_the_kv_cache_and_frame_features(model, conversation):
    engine = SegLLMEngine(model, EngineConfig(mode="cached"))
    run(engine, conversation, rounds=conversation.rounds[:2])
    kv = engine.history_nbytes("c")["kv_cache"]
    assert kv > 0
    calls = []
    original = model.vision_tokens  # the vision graph runs once per encoded frame
    model.vision_tokens = lambda pixels: calls.append(1) or original(pixels)
    try:
        run(engine, conversation, rounds=conversation.rounds[2:3])
    finally:
        del model.vision_tokens
    assert calls == []  # the frame's CLIP/SAM features were reused
    assert engine.history_nbytes("c")["kv_cache"] > kv  # one round appended, not rebuilt
    engine.reset("c")
    assert engine.history_nbytes("c") == {"history": 0, "kv_cache": 0, "ref_tokens": 0}
    assert engine._caches == {}  # the store's drop hook freed the KV cache


def test_state_save_and_restore_continues_identically(model, conversation, tmp_path):
    straight = run(SegLLMEngine(model), conversation)
    first = SegLLMEngine(model, store=ConversationStore(archive=ConversationArchive(tmp_path)))
    run(first, conversation, rounds=conversation.rounds[:3])  # saved after every round
    restarted = SegLLMEngine(model, store=ConversationStore(archive=ConversationArchive(tmp_path)))
    assert restarted.store.restore() == 1
    conv = restarted.store.get("c")
    frame = conv.pinned_frame
    resumed = [
        restarted.segment("c", r.query, frame, r.ref_rounds) for r in conversation.rounds[3:]
    ]
    for a, b in zip(straight[3:], resumed, strict=True):
        assert b.round_index == a.round_index
        assert mask_iou(a.mask, b.mask) >= 0.99


def test_model_failure_mid_round_keeps_earlier_rounds(model, conversation):
    engine = SegLLMEngine(model)
    straight = run(SegLLMEngine(model), conversation, rounds=conversation.rounds[:3])
    run(engine, conversation, rounds=conversation.rounds[:2])

    def broken(*args, **kwargs):
        raise RuntimeError("simulated accelerator fault")

    model.seg_head.forward = broken
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            run(engine, conversation, rounds=conversation.rounds[2:3])
    finally:
        del model.seg_head.forward
    assert engine.store.get("c").num_rounds == 2
    again = run(engine, conversation, rounds=conversation.rounds[2:3])[0]
    assert again.round_index == 3 and mask_iou(again.mask, straight[2].mask) >= 0.99


def test_bad_reference_leaves_the_conversation_untouched(model, conversation):
    engine = SegLLMEngine(model)
    run(engine, conversation, rounds=conversation.rounds[:1])
    with pytest.raises(BadReferenceError, match="round 4 does not exist"):
        engine.segment("c", "<the output of round 4> again", engine.store.get("c").pinned_frame)
    assert engine.store.get("c").num_rounds == 1


def test_generated_answer_goes_through_the_same_cache(model, conversation):
    forced = run(SegLLMEngine(model), conversation, rounds=conversation.rounds[:3])
    generated = run(
        SegLLMEngine(model, EngineConfig(generate_text=True)),
        conversation,
        rounds=conversation.rounds[:3],
    )
    for a, b in zip(forced, generated, strict=True):
        assert "<seg>" in b.text
        assert mask_iou(a.mask, b.mask) >= 0.99


def test_reset_and_precision(model, conversation, tmp_path):
    engine = SegLLMEngine(model)
    run(engine, conversation, rounds=conversation.rounds[:1], cid="a")
    run(engine, conversation, rounds=conversation.rounds[:1], cid="b")
    assert engine.reset("a") == 1 and engine.reset("a") == 0 and engine.reset("") == 1
    half = load_engine(str(DEMO_MODEL), precision="bf16")
    assert half.model.dtype == torch.bfloat16
    result = run(half, conversation, rounds=conversation.rounds[:1])[0]
    assert result.mask.dtype == np.bool_ and result.mask.shape == conversation.scene.image.shape[:2]
    with pytest.raises(ValueError, match="backend"):
        load_engine(str(DEMO_MODEL), backend="openvino")


def test_engine_keeps_the_configured_store_limits(model, conversation):
    """store_limits: an empty store is falsy; the engine once replaced it with the defaults
    (16 conversations, 32 rounds, no TTL), so the node's limits had no effect."""
    store = ConversationStore(max_conversations=2, max_rounds=2, ttl_s=2.0)
    engine = SegLLMEngine(model, store=store)
    assert engine.store is store
    run(engine, conversation, rounds=conversation.rounds[:2])
    with pytest.raises(ConversationFullError):
        run(engine, conversation, rounds=conversation.rounds[2:3])
    for cid in ("d", "e"):
        run(engine, conversation, rounds=conversation.rounds[:1], cid=cid)
    assert engine.store.ids() == ["d", "e"]


def test_refused_queries_change_nothing(model, conversation):
    engine = SegLLMEngine(model)
    frame = Frame.create(conversation.scene.image, 1, "table")
    with pytest.raises(BadReferenceError, match="first round"):
        engine.segment("new", "<the output of round 1> again", frame)
    assert "new" not in engine.store  # not created by a refused query
    run(engine, conversation, rounds=conversation.rounds[:2])
    with pytest.raises(BadReferenceError, match="first round"):
        engine.segment("c", "<the output of round 1> again", frame, reset_before=True)
    assert engine.store.get("c").num_rounds == 2  # reset_before waits for validity
    result = engine.segment("c", conversation.rounds[0].query, frame, reset_before=True)
    assert result.round_index == 1


def test_a_reference_into_an_ended_conversation_says_how_it_ended(model, conversation):
    engine = SegLLMEngine(model, store=ConversationStore(max_conversations=1))
    run(engine, conversation, rounds=conversation.rounds[:1], cid="a")
    run(engine, conversation, rounds=conversation.rounds[:1], cid="b")  # evicts a
    frame = Frame.create(conversation.scene.image, 1, "table")
    with pytest.raises(BadReferenceError, match=r"'a' was evicted \(max_conversations=1"):
        engine.segment("a", "the cup left of <the output of round 1>", frame)
    engine.reset("b")
    with pytest.raises(BadReferenceError, match="'b' was reset"):
        engine.segment("b", "it again", frame)


def test_an_elongated_frame_is_refused_before_the_model(model):
    engine = SegLLMEngine(model)
    frame = Frame.create(np.zeros((1, 100_000, 3), np.uint8), 1, "line")
    with pytest.raises(UnsupportedFrameError, match="too elongated"):
        engine.segment("c", "the red circle", frame)
    assert "c" not in engine.store


def test_history_keeps_frames_at_model_resolution(model, conversation):
    """A camera frame larger than the model's input is kept downscaled in the history; the
    result mask is still at the camera's resolution."""
    size = model.config.sam.image_size
    big = np.repeat(np.repeat(conversation.scene.image, 8, axis=0), 8, axis=1)
    assert max(big.shape[:2]) > size
    engine = SegLLMEngine(model)
    frames = [Frame.create(big, i + 1, "cam") for i in range(3)]
    results = [
        engine.segment("c", r.query, f, r.ref_rounds)
        for r, f in zip(conversation.rounds[:3], frames, strict=False)
    ]
    assert all(r.mask.shape == big.shape[:2] for r in results)
    conv = engine.store.get("c")
    assert all(max(f.image.shape[:2]) == size for f in conv.frames.values())
    assert conv.history_bytes() < 3 * big.nbytes / 16
