"""Generation rules: round limits, probabilities over many seeds, references, hard pairs."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from mrseg_data import SOURCE_DIRS, tiny_config, write_all

from segllm_training.mrseg import fixtures as fx
from segllm_training.mrseg.build import build, read_source
from segllm_training.mrseg.config import MAX_ROUNDS, BuildConfig
from segllm_training.mrseg.entries import ImageEntry, Instance
from segllm_training.mrseg.generators.common import image_rng
from segllm_training.mrseg.generators.positional import positional
from segllm_training.mrseg.generators.single import HARD_EVAL_TEMPLATES, HARD_TRAIN_TEMPLATES
from segllm_training.mrseg.schema import INPUT_MASK_TOKEN, decode_mask, read_conversations
from segllm_training.relations import positional_relation


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("mrseg"), n=12)


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    files = {}
    for source, folder in SOURCE_DIRS.items():
        files[source] = out / f"{source}.jsonl"
        build(source, data / folder, "train", files[source], tiny_config(), progress=False)
    return files


def big_entry(n: int, seed: int = 0, classes=fx.CLASSES, expressions: int = 1) -> ImageEntry:
    """One 400x400 image with ``n`` ellipses, each referred to by ``expressions`` sentences."""
    rng = np.random.default_rng(seed)
    instances = []
    for k in range(n):
        poly, (x, y, w, h) = fx.ellipse(rng, 400, 400)
        cls = classes[k % len(classes)]
        instances.append(
            Instance(
                ann_id=k,
                category=cls,
                bbox=(x, y, x + w, y + h),
                segmentation=[poly],
                captions=[f"{cls} {k} says {e}" for e in range(expressions)],
            )
        )
    return ImageEntry(
        image_id="big",
        file_name="big.jpg",
        height=400,
        width=400,
        split="train",
        instances=instances,
    )


@pytest.mark.parametrize("source", sorted(SOURCE_DIRS))
def test_round_limits_and_references(built, source):
    records = read_conversations(built[source])
    assert records, source
    lengths = [len(r.rounds) for r in records]
    assert max(lengths) <= MAX_ROUNDS[source]
    if source in ("refcoco", "refcoco+", "refcocog", "lvis"):
        assert min(lengths) >= 2
    if source == "visual_genome":
        assert set(lengths) == {2}
    for rec in records:
        for i, rnd in enumerate(rec.rounds, start=1):
            assert all(1 <= k < i for k in rnd.ref_rounds)
            assert decode_mask(rnd.mask).sum() >= BuildConfig().min_area


def test_positional_round_count_spans_2_to_18():
    counts = Counter(
        len(positional(big_entry(25), image_rng(s, "t", 0), BuildConfig(), "refcoco")[0].rounds)
        for s in range(300)
    )
    assert min(counts) == 2 and max(counts) == 18


def test_positional_probabilities_over_seeds():
    cfg = BuildConfig()
    self_q = relating = caption = instance = output = same = 0
    entry = big_entry(18)
    for seed in range(400):
        rec = positional(entry, image_rng(seed, "refcoco", "big"), cfg, "refcoco")[0]
        boxes = {i.ann_id: i.bbox for i in entry.instances}
        for rnd in rec.rounds[1:]:
            if not rnd.ref_rounds:
                self_q += 1
                continue
            relating += 1
            (k,) = rnd.ref_rounds
            ref = rec.rounds[k - 1]
            instance += f"<instance {k}>" in rnd.query
            output += f"<the output of round {k}>" in rnd.query
            caption += "<" not in rnd.query and ref.caption in rnd.query
            same += "the same as" in rnd.query
            a, b = (fx_int(boxes[rnd.annotation_id]), fx_int(boxes[ref.annotation_id]))
            rel = positional_relation(a, b, min_overlap=cfg.overlap_min)
            assert rel in rnd.query
    total = self_q + relating
    assert abs(self_q / total - 1 / 3) < 0.03
    assert caption + instance + output == relating
    assert abs(caption / relating - 0.5) < 0.03
    assert abs(instance / relating - 0.25) < 0.03 and abs(output / relating - 0.25) < 0.03
    assert same == 0  # one expression per object: nothing is asked about twice


def test_refcoco_samples_expressions_so_objects_repeat():
    """Issue 19.1: 2-18 *expressions* of an image, not one per object; "the same as" comes
    from two expressions of one object, and only from them."""
    entry = big_entry(3, expressions=4)  # 3 objects, 12 expressions
    lengths, same, relating, repeated = Counter(), 0, 0, 0
    for seed in range(300):
        (rec,) = positional(entry, image_rng(seed, "refcoco", "big"), BuildConfig(), "refcoco")
        lengths[len(rec.rounds)] += 1
        ids = [r.annotation_id for r in rec.rounds]
        repeated += len(ids) > len(set(ids))
        for rnd in rec.rounds:
            if rnd.ref_rounds:
                relating += 1
                ref = rec.rounds[rnd.ref_rounds[0] - 1]
                is_same = "the same as" in rnd.query
                assert is_same == (rnd.annotation_id == ref.annotation_id), rnd.query
                assert rnd.caption != ref.caption or not is_same  # two different expressions
                same += is_same
    assert min(lengths) == 2 and max(lengths) == 12  # bounded by expressions, not 3 objects
    assert repeated > 200 and 0.1 < same / relating < 0.5


def test_lvis_never_says_the_same_as():
    """Issue 19.1: one annotation per LVIS instance cannot produce "the same as" (it used to
    be injected with probability 0.1)."""
    classes = ("teapot", "lamp", "kettle", "vase", "kite", "drum", "bow", "pan")
    entry = big_entry(16, classes=classes)
    for inst in entry.instances:
        inst.captions = []
    relating = 0
    for seed in range(300):
        (rec,) = positional(entry, image_rng(seed, "lvis", "big"), BuildConfig(), "lvis")
        ids = [r.annotation_id for r in rec.rounds]
        assert len(ids) == len(set(ids))
        relating += sum(bool(r.ref_rounds) for r in rec.rounds)
        assert not any("the same as" in r.query for r in rec.rounds)
    assert relating > 500


def fx_int(box):
    from segllm_training.mrseg.generators.common import int_box

    return int_box(box)


def test_lvis_rule():
    classes = ("teapot", "lamp", "kettle")  # COCO classes are dropped by the reader
    entry = big_entry(7, classes=classes)  # teapot x3 (too many), lamp x2, kettle x2
    for inst in entry.instances:
        inst.captions = []
    seen = set()
    for seed in range(50):
        rec = positional(entry, image_rng(seed, "lvis", "big"), BuildConfig(), "lvis")[0]
        for rnd in rec.rounds:
            cls = entry.instances[rnd.annotation_id].category
            seen.add(cls)
            if not rnd.ref_rounds:
                assert rnd.caption.split(" on the ")[0].split(" at the ")[0] == cls
                assert any(w in rnd.caption for w in ("left", "right", "top", "bottom"))
    assert seen == {"lamp", "kettle"}


def test_hard_pairs_are_same_class_with_split_templates(tmp_path):
    assert len(HARD_TRAIN_TEMPLATES) == 10 and len(HARD_EVAL_TEMPLATES) == 5
    assert not set(HARD_TRAIN_TEMPLATES) & set(HARD_EVAL_TEMPLATES)
    fx.write_refer(tmp_path / "refcoco", np.random.default_rng(1), 40)
    instances = json.loads((tmp_path / "refcoco" / "instances.json").read_text())["annotations"]
    cat = {a["id"]: a["category_id"] for a in instances}
    for split, templates in (("train", HARD_TRAIN_TEMPLATES), ("val", HARD_EVAL_TEMPLATES)):
        out = tmp_path / f"{split}.jsonl"
        build("mrseg_hard", tmp_path / "refcoco", split, out, progress=False)
        records = read_conversations(out)
        assert records
        pairs = Counter()
        for rec in records:
            (rnd,) = rec.rounds
            assert rnd.input_mask is not None and INPUT_MASK_TOKEN in rnd.query
            assert any(
                rnd.query == t.format(x=INPUT_MASK_TOKEN, cls=rnd.caption[6:]) for t in templates
            )
            assert not np.array_equal(decode_mask(rnd.input_mask), decode_mask(rnd.mask))
            pairs[rec.image] += 1
        x_ids = [r.rounds[0].annotation_id for r in records]
        assert all(cat[a] == cat[b] for a, b in zip(x_ids[::2], x_ids[1::2], strict=True))
        for a, b in zip(records[::2], records[1::2], strict=True):  # Y->X is X->Y reversed
            assert a.rounds[0].input_mask == b.rounds[0].mask
            assert b.rounds[0].input_mask == a.rounds[0].mask
        assert all(v % 2 == 0 for v in pairs.values())  # X->Y and Y->X


def test_hierarchical_parts_follow_their_object(data, built):
    entries, _ = read_source("paco_lvis", data / "paco", "train")
    parent = {i.ann_id: i.parent for e in entries for i in e.instances}
    for rec in read_conversations(built["paco_lvis"]):
        objects = sum(not r.ref_rounds for r in rec.rounds)
        assert 1 <= objects <= 4
        for rnd in rec.rounds:
            if rnd.ref_rounds:
                (k,) = rnd.ref_rounds
                assert parent[rnd.annotation_id] == rec.rounds[k - 1].annotation_id
                assert " of " in rnd.query
        per_object = Counter(r.ref_rounds[0] for r in rec.rounds if r.ref_rounds)
        assert all(1 <= v <= 4 for v in per_object.values())


def test_same_file_for_any_worker_count_and_seed_matters(data, tmp_path):
    root = data / "refcoco"
    one, two, other = tmp_path / "1.jsonl", tmp_path / "2.jsonl", tmp_path / "s.jsonl"
    build("refcoco", root, "train", one, BuildConfig(seed=3), workers=1, progress=False)
    build("refcoco", root, "train", two, BuildConfig(seed=3), workers=2, progress=False)
    build("refcoco", root, "train", other, BuildConfig(seed=4), workers=1, progress=False)
    assert one.read_bytes() == two.read_bytes()
    assert one.read_bytes() != other.read_bytes()


_FORKED_SAM = """
import sys
from pathlib import Path
root, data, out = map(Path, sys.argv[1:4])
# this checkout first, as pytest's pythonpath puts it
sys.path[:0] = [str(root / "test"), str(root), str(root / "training")]
import torch
from mrseg_data import tiny_config
from segllm_training.mrseg.build import build
torch.set_num_threads(2)
x = torch.randn(256, 256)
(x @ x).sum()  # the parent's OpenMP pool is running when the workers are forked
print(build("visual_genome", data, "train", out, tiny_config(), workers=2, progress=False))
"""


def test_forked_workers_do_not_hang_after_parent_used_torch(data, tmp_path):
    """Visual Genome's SAM in workers forked from a process whose OpenMP pool has run (a
    libgomp child hangs in its first parallel region; build's worker init guards it)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "vg.jsonl"
    args = [sys.executable, "-c", _FORKED_SAM, str(root), str(data / "vg"), str(out)]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )  # its own group: a hang kills the workers too
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the build hung in its forked workers")
    assert proc.returncode == 0, err[-2000:]
    assert len(read_conversations(out)) > 0
