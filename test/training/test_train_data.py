"""Training data: LISA conversions, broken records and images reported (file + line) and
skipped (counted), dataset mixing, truncation, and a sampler that splits one global batch
across processes exactly."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from helpers import tiny_model
from train_helpers import tiny_config

from segllm_training.mrseg import lisa
from segllm_training.mrseg.schema import (
    INPUT_MASK_TOKEN,
    ConversationRecord,
    RoundRecord,
    encode_mask,
    write_conversations,
)
from segllm_training.tabletop import TabletopConfig, generate_dataset
from segllm_training.trainer.batch import collate
from segllm_training.trainer.data import (
    Item,
    MixtureSampler,
    SampleConfig,
    Source,
    SourceConfig,
    source_weights,
    tabletop_item,
    to_sample,
)
from segllm_training.trainer.loop import read_metrics, train

H, W = 24, 32


def _record(cid: str, image: str, n_rounds: int = 3) -> ConversationRecord:
    rounds = []
    for i in range(n_rounds):
        mask = np.zeros((H, W), bool)
        mask[i * 5 : i * 5 + 4, 2:10] = True
        query = "the cup" if i == 0 else f"the bowl left of <the output of round {i}>"
        rounds.append(
            RoundRecord(
                query=query,
                mask=encode_mask(mask),
                ref_rounds=[i] if i else [],
                caption=f"object {i + 1}",
            )
        )
    return ConversationRecord(cid, "toy", "train", image, H, W, rounds)


def test_lisa_conversions_turn_references_into_text():
    rec = _record("c", "a.png")
    rec.rounds[2].query = "<instance 1> and <the output of round 2>"
    one, two = lisa.approach1(rec), lisa.approach2(rec)
    assert [r.ref_rounds for r in one.rounds] == [[], [], []] == [r.ref_rounds for r in two.rounds]
    assert one.rounds[1].query == "the bowl left of the mask"
    assert one.rounds[2].query == "the mask and the mask"
    assert two.rounds[1].query == "the bowl left of the object 1"
    assert two.rounds[2].query == "the object 1 and the object 2"
    assert rec.rounds[1].ref_rounds == [1]  # the input record is left alone
    assert lisa.convert(rec, None) is rec
    with pytest.raises(ValueError):
        lisa.convert(rec, "approach3")


def _dataset(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "ok.png"), np.full((H, W, 3), 128, np.uint8))
    path = tmp_path / "toy.jsonl"
    write_conversations(path, [_record("good", "ok.png"), _record("lost", "missing.png")])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], '{"id": "broken", "rounds": [', lines[1]]) + "\n")
    return path, images


def test_corrupt_records_and_missing_images_are_reported_skipped_and_counted(tmp_path, caplog):
    path, images = _dataset(tmp_path)
    caplog.set_level(logging.WARNING)
    source = Source(SourceConfig(path=str(path), image_root=str(images)))
    assert len(source) == 2 and source.skipped["corrupt_record"] == 1
    assert f"{path}:2" in caplog.text  # file and line of the corrupt record
    sampler = MixtureSampler([source], "uniform", 0, SampleConfig(mask_rounds=0), 0.0)
    samples = sampler.next_batch(8)
    assert len(samples) == 8 and all(s.image.shape == (H, W, 3) for s in samples)
    assert sampler.skipped["missing_image"] > 0  # drawn, skipped, counted
    assert f"{path}:3 (lost)" in caplog.text and "missing.png" in caplog.text


def test_mixing_uniform_per_source_or_proportional(tmp_path):
    path, images = _dataset(tmp_path)
    small = Source(SourceConfig(path=str(path), image_root=str(images)))
    big = Source(SourceConfig(tabletop={}, size=6))
    assert np.allclose(source_weights([small, big], "uniform"), [0.5, 0.5])
    assert np.allclose(source_weights([small, big], "proportional"), [0.25, 0.75])
    big.cfg.weight = 3.0
    assert np.allclose(source_weights([small, big], "uniform"), [0.25, 0.75])


def test_one_global_batch_splits_exactly_across_processes():
    cfg = SourceConfig(tabletop={"image_size": 64, "min_size": 10, "max_size": 16}, size=50)
    sample_cfg = SampleConfig(max_rounds=2, mask_rounds=1)
    single = MixtureSampler([Source(cfg)], "uniform", 3, sample_cfg, 0.5).next_batch(4)
    ranks = [
        MixtureSampler([Source(cfg)], "uniform", 3, sample_cfg, 0.5).next_batch(2, r, 2)
        for r in range(2)
    ]
    for a, b in zip(single, ranks[0] + ranks[1], strict=True):
        assert np.array_equal(a.image, b.image)
        assert [r.query for r in a.rounds] == [r.query for r in b.rounds]
        assert a.mask_rounds == b.mask_rounds and a.ref_keep == b.ref_keep
    assert all(len(s.rounds) <= 2 for s in single)  # truncated
    assert any(len(s.rounds) == 2 for s in single)  # so the next line checks something
    assert all(len(s.mask_rounds) == 1 for s in single if len(s.rounds) == 2)


def test_tabletop_items_mark_the_twin_as_distractor():
    conv = next(
        c
        for c in generate_dataset(5, 20, TabletopConfig())
        if any(r.ambiguous_without_reference for r in c.rounds)
    )
    item = tabletop_item(conv, "t")
    for i, rnd in enumerate(conv.rounds, start=1):
        if rnd.ambiguous_without_reference:
            twin = conv.scene.twin_of(rnd.target)
            assert np.array_equal(item.distractors[i], conv.scene.target_mask(twin))
        else:
            assert i not in item.distractors


def test_trainer_runs_through_broken_data_and_counts_it(tmp_path):
    path, images = _dataset(tmp_path)
    cfg = tiny_config(max_steps=3, checkpoint_every=1000, per_device_batch=4)
    cfg.data.sources = [SourceConfig(path=str(path), image_root=str(images)), cfg.data.sources[0]]
    train(cfg, tmp_path / "run", progress=False)
    records = read_metrics(tmp_path / "run")
    assert len(records) == 3 and all(np.isfinite(r["loss"]) for r in records)
    assert records[0]["bad_data"] >= 1  # the corrupt line, counted at start
    assert records[-1]["bad_data"] > records[0]["bad_data"]  # missing images as drawn


def test_mrseg_hard_input_mask_is_encoded_as_the_rounds_reference():
    """ "[encode X] segment the other chair": X goes in as reference input (tokens + dense
    prompt), the placeholder leaves the text, and "the other" is not read as "the previous
    round" (there is none)."""
    x = np.zeros((H, W), bool)
    x[2:8, 2:8] = True
    y = np.zeros((H, W), bool)
    y[10:20, 20:30] = True
    record = ConversationRecord(
        "hard-0",
        "mrseg_hard",
        "train",
        "img.png",
        H,
        W,
        [
            RoundRecord(
                query=f"{INPUT_MASK_TOKEN} segment the other chair",
                mask=encode_mask(y),
                input_mask=encode_mask(x),
                caption="other chair",
            )
        ],
    )
    image = np.full((H, W, 3), 128, np.uint8)
    sample = to_sample(Item(record, image), np.random.default_rng(0), reference_dropout=0.0)
    rnd = sample.rounds[0]
    assert rnd.query == "segment the other chair" and rnd.ref_rounds == []
    assert len(rnd.input_masks) == 1 and (rnd.input_masks[0] == x).all()
    assert sample.ref_keep == [True]
    model = tiny_model()
    batch = collate([sample], model)
    ref_id = model.ref_token_id
    assert int((batch.input_ids == ref_id).sum()) == 2  # one mask + one box token
    assert (batch.ref_masks[0][0].numpy() == x).all()
    assert bool(batch.has_ref[0]) and batch.dense_ref[0].sum() > 0
