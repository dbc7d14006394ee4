"""Issue 17: ambiguous positional rounds in MRSeg: detection, ``BuildConfig.ambiguous`` (keep,
drop, multi), the schema's ``kind``/``targets`` and the share the build and stats report.

The hand-built scene (one 100x200 image, four rectangles; boxes are x0, y0, x1, y1):

    cup A (10, 40, 30, 60)     cup B (60, 45, 80, 65)     cup D (145, 0, 175, 20)
    dog R (140, 40, 180, 80)

Both A and B are "to the left of" R and "to the bottom left of" D; every other relation has
one cup at most (D is "above" R, A is "to the left of" B, B "to the right of" A, ...) and
there is one dog. So a relational round is ambiguous exactly when its target is A or B and its
reference R or D.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter

import numpy as np
import pytest
from test_mrseg_voc import write_voc_as_refcoco

from segllm_ros.engine.answers import AMBIGUOUS, ONE
from segllm_training.mrseg.build import build
from segllm_training.mrseg.cli import main
from segllm_training.mrseg.config import BuildConfig
from segllm_training.mrseg.entries import ImageEntry, Instance
from segllm_training.mrseg.generators.ambiguity import Matcher
from segllm_training.mrseg.generators.common import image_rng, int_box, targets
from segllm_training.mrseg.generators.positional import positional
from segllm_training.mrseg.schema import (
    ConversationRecord,
    RoundRecord,
    decode_mask,
    encode_mask,
    read_conversations,
    write_conversations,
)
from segllm_training.mrseg.stats import build_report_path
from segllm_training.relations import ABOVE, BOTTOM_LEFT, LEFT, positional_relation

H, W = 100, 200
SCENE = {  # ann id: (class, box); B comes before A so reading order is not input order
    2: ("cup", (60, 45, 80, 65)),
    1: ("cup", (10, 40, 30, 60)),
    3: ("cup", (145, 0, 175, 20)),
    4: ("dog", (140, 40, 180, 80)),
}
A, B, D, R = 1, 2, 3, 4
AMBIGUOUS_PAIRS = {(t, r) for t in (A, B) for r in (R, D)}  # (target, reference)


def rect_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def scene_entry() -> ImageEntry:
    return ImageEntry(
        image_id=1,
        file_name="scene.jpg",
        height=H,
        width=W,
        split="train",
        instances=[
            Instance(k, cls, box, encode_mask(rect_mask(box)), captions=[f"{cls} number {k}"])
            for k, (cls, box) in SCENE.items()
        ],
    )


def write_scene_as_refcoco(root, n_images: int = 30) -> None:
    """The scene ``n_images`` times (one conversation per image) in RefCOCO's real files."""
    names = sorted({cls for cls, _ in SCENE.values()})
    images, anns, refs = [], [], []
    for image in range(1, n_images + 1):
        images.append({"id": image, "file_name": f"s{image}.jpg", "height": H, "width": W})
        for k, (cls, (x0, y0, x1, y1)) in SCENE.items():
            ann_id = 10 * image + k
            anns.append(
                {
                    "id": ann_id,
                    "image_id": image,
                    "category_id": names.index(cls) + 1,
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
            refs.append(
                {
                    "ref_id": ann_id,
                    "ann_id": ann_id,
                    "image_id": image,
                    "split": "train",
                    "sentences": [{"sent": f"{cls} number {k}"}],
                }
            )
    root.mkdir(parents=True)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    (root / "instances.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": categories})
    )
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs))


def relational(record: ConversationRecord):
    """(round, target ann id, reference ann id) of the relational rounds (ann ids mod 10 =
    the scene's ids, whatever the image)."""
    for rnd in record.rounds:
        if rnd.ref_rounds:
            (k,) = rnd.ref_rounds
            target = rnd.annotation_id % 10 if rnd.annotation_id is not None else None
            yield rnd, target, record.rounds[k - 1].annotation_id % 10


def test_ambiguity_detection_on_the_hand_built_scene():
    entry, cfg = scene_entry(), BuildConfig()
    by_id = {t.inst.ann_id: t for t in targets(entry, cfg)}
    matcher = Matcher(entry, cfg, list(by_id.values()))
    boxes = {k: box for k, (_, box) in SCENE.items()}
    assert positional_relation(boxes[A], boxes[R], min_overlap=cfg.overlap_min) == LEFT
    assert positional_relation(boxes[D], boxes[R], min_overlap=cfg.overlap_min) == ABOVE
    for target in (A, B):
        for ref, relation in ((R, LEFT), (D, BOTTOM_LEFT)):
            found = matcher.matches(by_id[target], by_id[ref], relation)
            assert [t.inst.ann_id for t in found] == [A, B]  # reading order: A is left of B
    assert [t.inst.ann_id for t in matcher.matches(by_id[D], by_id[R], ABOVE)] == [D]
    assert [t.inst.ann_id for t in matcher.matches(by_id[A], by_id[B], LEFT)] == [A]
    assert [t.inst.ann_id for t in matcher.matches(by_id[R], by_id[A], "to the right of")] == [R]


def test_ambiguity_ignores_instances_too_small_to_be_targets():
    entry = scene_entry()
    entry.instances[0].segmentation = encode_mask(rect_mask((60, 45, 63, 50)))  # B: 15 px
    cfg = BuildConfig()
    by_id = {t.inst.ann_id: t for t in targets(entry, cfg)}
    assert B not in by_id
    found = Matcher(entry, cfg, list(by_id.values())).matches(by_id[A], by_id[R], LEFT)
    assert [t.inst.ann_id for t in found] == [A]


def _conversations(mode: str, seeds: int = 150):
    cfg, entry = BuildConfig(ambiguous=mode), scene_entry()
    tally: Counter = Counter()
    records = [
        positional(entry, image_rng(s, "refcoco", 1), cfg, "refcoco", tally)[0]
        for s in range(seeds)
    ]
    return records, tally


def test_ambiguity_keep_is_the_seed_and_counts_what_it_keeps():
    records, tally = _conversations("keep")
    expected = positional_rounds = 0
    for rec in records:
        for rnd, target, ref in relational(rec):
            positional_rounds += 1
            expected += (target, ref) in AMBIGUOUS_PAIRS
            assert rnd.kind == ONE and rnd.targets is None
    assert tally["positional_rounds"] == positional_rounds
    assert tally["ambiguous_rounds"] == expected
    assert 0 < expected < positional_rounds


def test_ambiguity_drop_asks_for_the_object_by_its_caption_instead():
    records, tally = _conversations("drop")
    self_queries = relational_rounds = 0
    for rec in records:
        for rnd, target, ref in relational(rec):
            relational_rounds += 1
            assert (target, ref) not in AMBIGUOUS_PAIRS, rnd.query
        self_queries += sum(not r.ref_rounds for r in rec.rounds[1:])
        assert all(r.kind == ONE and r.targets is None for r in rec.rounds)
    assert tally["ambiguous_rounds"] > 0  # counted, then turned into self queries
    assert tally["positional_rounds"] == relational_rounds + tally["ambiguous_rounds"]
    keep, _ = _conversations("keep")
    assert self_queries > sum(not r.ref_rounds for rec in keep for r in rec.rounds[1:])


def test_ambiguity_multi_keeps_every_candidate_in_reading_order():
    records, tally = _conversations("multi")
    union = rect_mask(SCENE[A][1]) | rect_mask(SCENE[B][1])
    multi = 0
    for rec in records:
        rec.validate()
        for i, rnd in enumerate(rec.rounds, start=1):
            if rnd.kind == AMBIGUOUS:
                multi += 1
                assert rnd.annotation_id is None and rnd.caption == "cup"
                assert re.match(r"the cup (to the left of|to the bottom left of) ", rnd.query)
                (k,) = rnd.ref_rounds
                assert rec.rounds[k - 1].annotation_id in (R, D)
                assert [decode_mask(t).tolist() for t in rnd.targets] == [
                    rect_mask(SCENE[A][1]).tolist(),
                    rect_mask(SCENE[B][1]).tolist(),
                ]
                assert np.array_equal(decode_mask(rnd.mask), union)
            else:
                assert rnd.kind == ONE and rnd.targets is None
            for k in rnd.ref_rounds:  # "<the output of round k>" is one object
                assert rec.rounds[k - 1].kind == ONE, (i, rnd.query)
        for rnd, target, ref in relational(rec):
            assert rnd.kind == ONE or target is None
            assert (target, ref) not in AMBIGUOUS_PAIRS
    assert multi == tally["ambiguous_rounds"] > 0


def test_ambiguity_config_is_checked():
    with pytest.raises(ValueError, match=r"ambiguous must be one of \['keep', 'drop', 'multi'\]"):
        BuildConfig(ambiguous="guess")


def test_ambiguity_schema_round_trip_and_old_records(tmp_path):
    a, b = rect_mask((10, 40, 30, 60)), rect_mask((60, 45, 80, 65))
    rounds = [
        RoundRecord("the dog", encode_mask(a), caption="dog", annotation_id=4),
        RoundRecord(
            "the cup to the left of <the output of round 1>",
            encode_mask(a | b),
            ref_rounds=[1],
            caption="cup",
            kind=AMBIGUOUS,
            targets=[encode_mask(a), encode_mask(b)],
        ),
    ]
    record = ConversationRecord("c", "refcoco", "train", "s.jpg", H, W, rounds)
    path = tmp_path / "c.jsonl"
    write_conversations(path, [record])
    (back,) = read_conversations(path)
    assert back == record and back.rounds[1].kind == AMBIGUOUS
    line = json.loads(path.read_text())
    assert "kind" not in line["rounds"][0] and "targets" not in line["rounds"][0]
    old = dict(line, rounds=[line["rounds"][0]])  # a record written before issue 17
    (path := tmp_path / "old.jsonl").write_text(json.dumps(old) + "\n")
    (back,) = read_conversations(path)
    assert back.rounds[0].kind == ONE and back.rounds[0].targets is None
    assert json.loads(back.to_json()) == old


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "maybe"}, "kind 'maybe' not one of"),
        ({"targets": []}, "targets must be a non-empty list"),
        ({"targets": [encode_mask(np.zeros((5, 5), bool))]}, "targets must be a non-empty list"),
    ],
)
def test_ambiguity_schema_rejects_unknown_kinds_and_bad_targets(change, message):
    rnd = RoundRecord("the cup", encode_mask(np.ones((H, W), bool)), **change)
    with pytest.raises(ValueError, match=message):
        ConversationRecord("c", "refcoco", "train", "s.jpg", H, W, [rnd]).validate()


def test_ambiguity_share_in_the_build_report_and_stats(tmp_path, capsys):
    write_scene_as_refcoco(tmp_path / "scene")
    args = ["build", "--source", "refcoco", "--root", str(tmp_path / "scene")]
    args += ["--split", "train", "--no-progress"]
    keep = tmp_path / "keep.jsonl"
    assert main([*args, "--out", str(keep)]) == 0
    records = read_conversations(keep)
    assert len(records) == 30 and '"kind"' not in keep.read_text()
    pairs = [(t, r) for rec in records for _, t, r in relational(rec)]
    ambiguous = sum(p in AMBIGUOUS_PAIRS for p in pairs)
    assert 0 < ambiguous < len(pairs)
    share = f"{100 * ambiguous / len(pairs):.1f}%"
    line = f"{ambiguous} of {len(pairs)} positional rounds ambiguous ({share}, kept)"
    assert line in capsys.readouterr().out
    report = json.loads(build_report_path(keep).read_text())
    assert report["positional_rounds"] == len(pairs)
    assert report["ambiguous_rounds"] == ambiguous and report["ambiguous"] == "keep"

    multi = tmp_path / "multi.jsonl"
    config = tmp_path / "multi.json"
    config.write_text(json.dumps({"ambiguous": "multi"}))
    assert main([*args, "--out", str(multi), "--config", str(config)]) == 0
    kinds = Counter(r.kind for rec in read_conversations(multi) for r in rec.rounds)
    assert kinds[AMBIGUOUS] == json.loads(build_report_path(multi).read_text())["ambiguous_rounds"]

    capsys.readouterr()
    assert main(["stats", str(keep), "--plot", str(tmp_path / "p.png")]) == 0
    row = f"| refcoco | train | {len(pairs)} | {ambiguous} | {share} | kept |"
    assert row in capsys.readouterr().out.splitlines()

    config.write_text(json.dumps({"ambiguous": "sometimes"}))
    assert main([*args, "--out", str(multi), "--config", str(config)]) == 2
    assert "ambiguous must be one of ['keep', 'drop', 'multi']" in capsys.readouterr().err


def test_ambiguity_of_the_voc_photo(tmp_path):
    """The real photo (19 instances: 8 chairs, 7 persons, 3 tables, a bottle): the build
    report's counts agree, seed by seed, with a brute-force count over its boxes and labels."""
    voc, boxes = write_voc_as_refcoco(tmp_path / "voc")
    labels = {k: int(voc["labels"][k - 1]) for k in boxes}
    min_overlap = BuildConfig().overlap_min

    def relation(a: int, b: int) -> str:
        return positional_relation(int_box(boxes[a]), int_box(boxes[b]), min_overlap=min_overlap)

    total = Counter()
    for seed in range(6):
        out = tmp_path / f"voc{seed}.jsonl"
        build("refcoco", tmp_path / "voc", "train", out, BuildConfig(seed=seed), progress=False)
        (rec,) = read_conversations(out)
        counted = Counter()
        for rnd in rec.rounds[1:]:
            if rnd.ref_rounds:  # one expression per object here: never "the same as"
                target, ref = rnd.annotation_id, rec.rounds[rnd.ref_rounds[0] - 1].annotation_id
                fits = [
                    k
                    for k in boxes
                    if k != ref
                    and labels[k] == labels[target]
                    and relation(k, ref) == relation(target, ref)
                ]
                assert target in fits
                counted["positional_rounds"] += 1
                counted["ambiguous_rounds"] += len(fits) > 1
        report = json.loads(build_report_path(out).read_text())
        assert {k: report[k] for k in counted} == dict(counted), seed
        total += counted
    assert 0 < total["ambiguous_rounds"] < total["positional_rounds"]
