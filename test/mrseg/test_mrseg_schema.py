"""The MRSeg conversation file format: round trip, validation, per-line error reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segllm_training.mrseg.schema import (
    ConversationRecord,
    RecordError,
    RoundRecord,
    decode_mask,
    encode_mask,
    iter_conversations,
    read_conversations,
    write_conversations,
)


def _record(cid: str = "c0", refs: list[int] | None = None) -> ConversationRecord:
    a = np.zeros((6, 8), bool)
    a[1:3, 2:5] = True
    b = np.zeros((6, 8), bool)
    b[4:6, 0:2] = True
    return ConversationRecord(
        cid,
        "refcoco",
        "train",
        "img/0.jpg",
        6,
        8,
        [
            RoundRecord("the cup", encode_mask(a), caption="cup", annotation_id=7),
            RoundRecord(
                "the plate below <the output of round 1>",
                encode_mask(b),
                ref_rounds=refs if refs is not None else [1],
                caption="plate",
            ),
        ],
    )


def test_mask_rle_round_trip_and_uncompressed_counts():
    mask = np.random.default_rng(0).random((31, 17)) > 0.5
    assert (decode_mask(encode_mask(mask)) == mask).all()
    json.dumps(encode_mask(mask))  # JSON-safe
    # an uncompressed RLE as COCO writes for crowd regions: column-major runs
    assert decode_mask({"size": [2, 2], "counts": [1, 2, 1]}).tolist() == [
        [False, True],
        [True, False],
    ]


def test_file_round_trip(tmp_path):
    path = tmp_path / "conv.jsonl"
    assert write_conversations(path, [_record("a"), _record("b")]) == 2
    back = read_conversations(path)
    assert [r.id for r in back] == ["a", "b"]
    assert back[0] == _record("a")
    assert decode_mask(back[0].rounds[1].mask).sum() == 4


@pytest.mark.parametrize("refs", [[2], [0], [3]])
def test_references_must_point_to_earlier_rounds(refs):
    with pytest.raises(ValueError, match="earlier rounds"):
        _record(refs=refs).validate()


def test_broken_line_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "conv.jsonl"
    write_conversations(path, [_record("a"), _record("b")])
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["rounds"][0]["mask"]["size"] = [5, 5]
    path.write_text("\n".join([lines[0], json.dumps(bad), "{not json"]) + "\n")
    items = list(iter_conversations(path))
    assert isinstance(items[0][1], ConversationRecord)
    assert [n for n, item in items if isinstance(item, RecordError)] == [2, 3]
    assert f"{path}:2" in str(items[1][1]) and "mask size" in str(items[1][1])
    with pytest.raises(RecordError, match=":2:"):
        read_conversations(path)
