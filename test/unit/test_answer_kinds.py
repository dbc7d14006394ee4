"""Multi-segment answers (issue 17) in the model, the training batch, the engine and the
history: instance slots, the plural head, answer kinds, clarification rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import demo_config, random_image

from segllm_ros.engine.answers import AMBIGUOUS, MANY, NONE, ONE, Segment, answer_kind
from segllm_ros.engine.engine import EngineConfig, SegLLMEngine
from segllm_ros.engine.history import Frame, Round
from segllm_ros.engine.references import BadReferenceError
from segllm_ros.model.processing import encode_frame
from segllm_ros.model.segllm import SegLLMModel
from segllm_training.tabletop import TabletopConfig, generate_dataset, vocabulary
from segllm_training.tabletop.stream import to_sample
from segllm_training.trainer.batch import collate
from segllm_training.trainer.build import demo_tokenizer
from segllm_training.trainer.losses import LossWeights, forward_batch

KINDS_CFG = TabletopConfig(plural_weight=1.0, ambiguous_weight=1.0, absent_weight=1.0)


def multi_model(seed: int = 0, **overrides) -> SegLLMModel:
    torch.manual_seed(seed)
    cfg = demo_config(max_segments=4, **overrides)
    return SegLLMModel.build(cfg, demo_tokenizer(cfg, KINDS_CFG))


def test_answer_kind_follows_presence_and_number():
    assert [answer_kind(n, False) for n in (0, 1, 2, 4)] == [NONE, ONE, AMBIGUOUS, AMBIGUOUS]
    assert [answer_kind(n, True) for n in (0, 1, 3)] == [NONE, MANY, MANY]


def test_grown_checkpoint_gets_instance_slots_and_words(tmp_path):
    """A single-slot checkpoint grown to four slots and the new rounds' words: the first
    slot computes exactly what the checkpoint did, the plural head starts singular, every
    new word has a token of its own and the known words keep their embeddings."""
    torch.manual_seed(1)
    small = demo_config()
    model = SegLLMModel.build(small, demo_tokenizer(small, TabletopConfig())).eval()
    model.save_pretrained(tmp_path)
    grown = SegLLMModel.grown_from(tmp_path, demo_config(max_segments=4), vocabulary(KINDS_CFG))

    feats = encode_frame(model, random_image(seed=2))
    hidden = model.hidden_size
    seg, turn = torch.randn(1, hidden), torch.randn(1, hidden)
    low, iou, _ = model.decode_from_seg(feats.sam_embedding, seg, turn, None)
    low4, iou4, plural = grown.decode_from_seg(feats.sam_embedding, seg, turn, None)
    assert low4.shape[1] == 4 and iou4.shape == (1, 4)
    assert torch.equal(low4[:, :1], low) and torch.equal(iou4[:, :1], iou)
    assert float(plural.detach()) == 0.0

    old_vocab, new_vocab = model.tokenizer.get_vocab(), grown.tokenizer.get_vocab()
    for word in ("crosses", "both", "objects", "second", "candidate"):
        assert word not in old_vocab and word in new_vocab
    old_emb = model.llm.get_input_embeddings().weight
    new_emb = grown.llm.get_input_embeddings().weight
    for word in ("red", "circle", "<seg>", "left"):
        assert torch.equal(new_emb[new_vocab[word]], old_emb[old_vocab[word]]), word
    grown.save_pretrained(tmp_path / "grown")
    with pytest.raises(ValueError, match="asks for fewer"):
        SegLLMModel.grown_from(tmp_path / "grown", demo_config(max_segments=2))


def test_collate_gives_each_object_its_slot_in_reading_order():
    conv = next(
        c
        for c in generate_dataset(11, 40, KINDS_CFG)
        if {"plural", "absent"} <= {r.kind for r in c.rounds}
    )
    model = multi_model()
    batch = collate([to_sample(conv)], model)
    kinds = [r.kind for r in conv.rounds]
    for i, rnd in enumerate(conv.rounds):
        present = batch.slot_present[i].tolist()
        assert present == [k < len(rnd.targets) for k in range(4)], (kinds[i], present)
        assert bool(batch.plural[i]) == rnd.plural
        if rnd.targets:
            xs = [
                float(batch.slot_targets[i, k].nonzero()[:, 1].float().mean())
                for k in range(len(rnd.targets))
            ]
            assert xs == sorted(xs)  # left to right
    clarify = [i for i, k in enumerate(kinds) if k == "clarify"]
    assert all(not batch.mask_weight[i] for i in clarify)


def test_multi_slot_training_learns_slots_presence_and_number():
    """A few dozen steps on four conversations with every answer kind: the slot masks'
    loss, the presence (IoU head) loss and the plural loss all fall."""
    torch.manual_seed(0)
    model = multi_model(seed=3).train()
    convs = [c for c in generate_dataset(5, 30, KINDS_CFG) if len(c.rounds) >= 4][:4]
    batch = collate([to_sample(c) for c in convs], model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    history = []
    for _ in range(40):
        opt.zero_grad()
        loss, metrics = forward_batch(model, batch, LossWeights(reference=0.0))
        loss.backward()
        opt.step()
        history.append(metrics)
    for term in ("mask", "iou_pred", "plural"):
        first = np.mean([h[term] for h in history[:3]])
        last = np.mean([h[term] for h in history[-3:]])
        assert last < 0.7 * first, (term, first, last)


def ambiguous_engine(mode: str) -> SegLLMEngine:
    """A random multi-slot model made to answer AMBIGUOUS with four candidates: every mask
    logit and every presence score counts (thresholds at -inf), and the plural head is
    zero (singular)."""
    model = multi_model(seed=4).eval()
    with torch.no_grad():
        model.plural_head.weight.zero_()
        model.plural_head.bias.zero_()
    cfg = EngineConfig(mode=mode, mask_threshold=-np.inf, presence_threshold=-np.inf)
    return SegLLMEngine(model, cfg)


@pytest.mark.parametrize("reply, chosen", [("the second one", 1), ("<candidate 3>", 2)])
def test_clarification_resolves_to_the_chosen_candidate_cached_and_recomputed(reply, chosen):
    image = random_image(seed=5)
    results = {}
    for mode in ("cached", "recompute"):
        engine = ambiguous_engine(mode)
        frame = Frame.create(image, 1, "cam")
        asked = engine.segment("c", "the red circle", frame)
        assert asked.kind == AMBIGUOUS and len(asked.segments) == 4
        assert "Which one?" in asked.text and "4 objects match 'the red circle'" in asked.text
        answer = engine.segment("c", reply, frame)
        assert answer.kind == ONE and len(answer.segments) == 1
        assert np.array_equal(answer.mask, asked.segments[chosen].mask)
        later = engine.segment("c", "the blue square left of <the output of round 2>", frame)
        assert later.ref_rounds == [2]
        results[mode] = (asked, answer, later)
    cached, recomputed = results["cached"], results["recompute"]
    for a, b in zip(cached, recomputed, strict=True):
        assert (a.kind, a.text) == (b.kind, b.text)
        assert all(
            np.array_equal(x.mask, y.mask) for x, y in zip(a.segments, b.segments, strict=True)
        )


def test_reply_naming_a_candidate_not_offered_changes_nothing():
    engine = ambiguous_engine("cached")
    frame = Frame.create(random_image(seed=6), 1, "cam")
    engine.segment("c", "the red circle", frame)
    with pytest.raises(BadReferenceError):
        engine.segment("c", "<candidate 9>", frame)
    conv = engine.store.get("c")
    assert conv.num_rounds == 1 and conv.rounds[0].kind == AMBIGUOUS


def test_round_keeps_every_segment_through_json():
    frame = Frame.create(np.zeros((20, 30, 3), np.uint8), 1, "cam")
    masks = [np.zeros((20, 30), bool) for _ in range(2)]
    masks[0][2:5, 3:6] = True
    masks[1][10:15, 20:28] = True
    segments = [Segment(m, (0, 0, 1, 1), s) for m, s in zip(masks, (0.9, 0.7), strict=True)]
    rnd = Round.from_segments(1, "the crosses", "Sure, it is <seg>.", [], segments, MANY, frame)
    back = Round.from_json(rnd.to_json())
    assert back.kind == MANY and np.array_equal(back.mask(), masks[0] | masks[1])
    assert [s.score for s in back.answer_segments()] == [0.9, 0.7]
    assert all(
        np.array_equal(s.mask, m) for s, m in zip(back.answer_segments(), masks, strict=True)
    )
    legacy = rnd.to_json()
    del legacy["kind"], legacy["segments"]
    assert Round.from_json(legacy).kind == ONE
    legacy["mask_rle"], legacy["box"] = None, None
    assert Round.from_json(legacy).kind == NONE
