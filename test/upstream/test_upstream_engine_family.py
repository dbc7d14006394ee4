"""The released family through the unchanged engine: a tiny released-style folder
(released_folder.py) loads by ``model_path`` and runs multi-round conversations with
references, cached and recomputed alike, and each round's mask is the one a single pass over
the whole conversation gives (upstream's way: the state before each ``<seg>``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from released_folder import write_released_folder

from segllm_ros.engine.engine import load_engine
from segllm_ros.engine.history import Frame
from segllm_ros.model import transforms as T
from segllm_ros.model.released import processing
from segllm_ros.model.released.model import ReleasedSegLLM
from segllm_ros.model.released.template import tokenize_round

ROUNDS = [
    ("Segment the person wearing glasses.", []),
    ("Segment his hair.[REF:1]", []),
    ("Segment the bag that <instance 1> is carrying.", [2]),
]
"""Queries and explicit ``ref_rounds``: round 2 refers upstream's way, round 3 with this
project's token and the request field (rounds 2 and 1)."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    return write_released_folder(tmp_path_factory.mktemp("release"), seed=0)


def frame() -> Frame:
    image = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    return Frame(image=image, stamp_ns=1, frame_id="cam")


def converse(folder, mode: str):
    engine = load_engine(str(folder), mode=mode)
    f = frame()
    return engine, [engine.segment("c", q, f, ref_rounds=r) for q, r in ROUNDS]


def test_upstream_engine_family_cached_equals_recompute(folder) -> None:
    engine, cached = converse(folder, "cached")
    assert isinstance(engine.model, ReleasedSegLLM)
    assert [r.ref_rounds for r in cached] == [[], [1], [2, 1]]
    _, recomputed = converse(folder, "recompute")
    for a, b in zip(cached, recomputed, strict=True):
        assert (a.text, a.kind, a.found) == (b.text, b.kind, b.found) == ("<seg>", a.kind, a.found)
        assert 0 < a.mask.mean() < 1  # a partial mask: equality below is not trivial
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.score == pytest.approx(b.score, abs=1e-5)
        assert a.mask.shape == (90, 120)


def test_upstream_engine_family_masks_from_one_pass(folder) -> None:
    """Each round's mask = the one decoded from a single LLM pass over the whole 3-round
    conversation at the position before that round's ``<seg>``, with the recorded masks
    encoded as references (no KV cache, no per-round feeding)."""
    engine, results = converse(folder, "cached")
    model, tok = engine.model, engine.model.tokenizer
    f = frame()
    ids: list[int] = []
    refs = []
    image = T.to_tensor(f.image)
    for i, (res, (query, _)) in enumerate(zip(results, ROUNDS, strict=True)):
        rnd = tokenize_round(
            tok, model.config, query, "<seg>", len(res.ref_rounds), i == 0, model.num_image_tokens
        )
        ids += rnd.ids
        if res.ref_rounds:
            masks = torch.stack([torch.from_numpy(results[k - 1].mask) for k in res.ref_rounds])
            refs.append(processing.reference_tokens(model, image, masks))
    with torch.inference_mode():
        feats = processing.encode_frame(model, f.image)
        input_ids = torch.tensor([ids])
        embeds = processing.embed(model, input_ids, feats.image_tokens, torch.cat(refs))
        hidden = model.llm_hidden(embeds).last_hidden_state[0]
        seg_at = (input_ids[0] == tok.convert_tokens_to_ids("<seg>")).nonzero()[:, 0]
        assert len(seg_at) == 3
        for res, at in zip(results, seg_at, strict=True):
            low, score, _ = model.decode_from_seg(feats.sam_embedding, hidden[at - 1][None])
            mask = T.postprocess_masks(low.float(), feats.hw, model.config.hipie.image_size)[0] > 0
            np.testing.assert_array_equal(mask.numpy(), res.mask)
            assert float(score) == pytest.approx(res.score, abs=1e-5)


def test_upstream_engine_family_torch_options(folder) -> None:
    """Static KV slots (``llm_graphs``), int8 LLM weights and bf16 (HIPIE kept in float32)
    run this family too (same answers as the dynamic cache / within quantisation error);
    ``compile_graphs`` refuses it with a reason instead of failing on SAM's settings."""
    f = frame()
    query = ROUNDS[0][0]
    dynamic = load_engine(str(folder)).segment("c", query, f)
    static = load_engine(str(folder), llm_graphs=True).segment("c", query, f)
    np.testing.assert_array_equal(static.mask, dynamic.mask)
    assert static.score == pytest.approx(dynamic.score, abs=1e-5)
    int8 = load_engine(str(folder), llm_quant="int8").segment("c", query, f)
    assert int8.score == pytest.approx(dynamic.score, abs=0.01)
    bf16 = load_engine(str(folder), precision="bf16")
    assert bf16.model.dtype == torch.bfloat16 and bf16.model.segmentator_dtype == torch.float32
    assert bf16.segment("c", query, f).mask.shape == dynamic.mask.shape
    with pytest.raises(ValueError, match="compile_graphs supports the segllm-sam family"):
        load_engine(str(folder), compile_graphs=True)
