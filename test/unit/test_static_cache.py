"""Issue 20: static KV-cache slots with bucketed feeds give the same rounds as the dynamic
cache (on a CPU, without graphs: what a GPU replays is the same static-cache computation),
fall back to the dynamic cache when slots run out or a conversation outgrows its slot, and
give their slot back whenever a conversation ends."""

from __future__ import annotations

import pytest
from helpers import DEMO_MODEL

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine
from segllm_ros.engine.history import Frame
from segllm_ros.engine.store import ConversationStore
from segllm_ros.interface.mask_codec import mask_iou
from segllm_ros.runtime.registry import load_runtime
from segllm_ros.runtime.static_cache import StaticCacheConfig
from segllm_ros.runtime.torch_runtime import TorchRuntime
from segllm_training.tabletop import TabletopConfig, generate_dataset


@pytest.fixture(scope="module")
def conversations():
    cfg = TabletopConfig(min_rounds=6, max_rounds=6)
    return [c for c in generate_dataset(77, 40, cfg) if len(c.rounds) == 6][:3]


def play(engine: SegLLMEngine, conv, cid: str):
    frame = Frame.create(conv.scene.image, 1, "table")
    return [engine.segment(cid, r.query, frame, r.ref_rounds) for r in conv.rounds]


def assert_same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.ref_rounds == y.ref_rounds and x.text == y.text
        assert mask_iou(x.mask, y.mask) >= 0.99 or not (x.mask.any() or y.mask.any())
        assert x.score == pytest.approx(y.score, abs=1e-4)


@pytest.mark.parametrize("mode", ["cached", "recompute"])
def test_static_cache_rounds_equal_dynamic_rounds(model, conversations, mode):
    dynamic = SegLLMEngine(model, EngineConfig(mode=mode))
    runtime = TorchRuntime(model, StaticCacheConfig(slots=2, max_len=512, buckets=(8, 16, 32)))
    static = SegLLMEngine(runtime, EngineConfig(mode=mode))
    for i, conv in enumerate(conversations):  # 3 conversations, 2 slots: one runs dynamic
        assert_same(play(dynamic, conv, f"c{i}"), play(static, conv, f"c{i}"))
    assert runtime.static_cache.free_slots == (2 if mode == "recompute" else 0)


def test_static_cache_generated_text_crops_back(model, conversations):
    config = EngineConfig(generate_text=True, max_new_tokens=6)
    dynamic = play(SegLLMEngine(model, config), conversations[0], "g")
    runtime = TorchRuntime(model, StaticCacheConfig(slots=1, max_len=512, buckets=(8, 16, 32)))
    assert_same(dynamic, play(SegLLMEngine(runtime, config), conversations[0], "g"))


def test_static_cache_overflow_moves_to_dynamic_and_gives_the_slot_back(model, conversations):
    dynamic = play(SegLLMEngine(model), conversations[0], "c")
    runtime = TorchRuntime(model, StaticCacheConfig(slots=1, max_len=80, buckets=(8, 16)))
    engine = SegLLMEngine(runtime)
    assert_same(dynamic, play(engine, conversations[0], "c"))
    cache = engine._caches["c"].kv
    assert cache.static is None and cache.get_seq_length() > 80
    assert runtime.static_cache.free_slots == 1


def test_static_cache_slots_return_on_reset_and_eviction(model, conversations):
    runtime = TorchRuntime(model, StaticCacheConfig(slots=2, max_len=512))
    engine = SegLLMEngine(runtime, store=ConversationStore(max_conversations=2))
    frame = Frame.create(conversations[0].scene.image, 1, "table")
    for cid in ("a", "b"):
        engine.segment(cid, "the red circle", frame)
    assert runtime.static_cache.free_slots == 0
    engine.segment("c", "the red circle", frame)  # no free slot: dynamic; recording evicts a
    assert runtime.static_cache.free_slots == 1 and engine._caches["c"].kv.slot is None
    engine.segment("d", "the red circle", frame)  # a's slot serves d (and b is evicted)
    assert engine._caches["d"].kv.slot is not None and runtime.static_cache.free_slots == 1
    engine.reset()
    assert runtime.static_cache.free_slots == 2


def test_static_cache_config_is_checked():
    with pytest.raises(ValueError, match="increasing"):
        StaticCacheConfig(buckets=(32, 16))
    assert StaticCacheConfig(buckets=(8, 16)).bucket(9) == 16
    assert StaticCacheConfig(buckets=(8, 16)).bucket(17) is None


def test_static_cache_and_quant_are_torch_runtime_options():
    runtime = load_runtime(str(DEMO_MODEL), llm_graphs=True, llm_quant="int8")
    assert runtime.static_cache is not None and runtime.static_cache.free_slots == 4
    assert type(runtime.model.llm.get_decoder().layers[0].mlp.up_proj.weight).__name__ == (
        "Int8Tensor"
    )
    with pytest.raises(ValueError, match="llm_quant must be one of"):
        load_runtime(str(DEMO_MODEL), llm_quant="int3")
    with pytest.raises(ValueError, match="the onnxruntime backend has no option llm_graphs"):
        load_runtime(str(DEMO_MODEL), backend="onnxruntime", llm_graphs=True)
