"""Where each kind of answer puts its masks in the node's messages (issue 17): the result's
``segments``/``answer_kind``/first-segment fields, the ``mask`` topic and the overlay."""

from __future__ import annotations

import numpy as np
import pytest

from segllm_ros.engine.answers import AMBIGUOUS, MANY, NONE, ONE, Segment, union
from segllm_ros.engine.engine import RoundResult
from segllm_ros.engine.history import Frame
from segllm_ros.engine.worker import Outcome, Query, Status, answer_status
from segllm_ros.interface.mask_codec import answer_overlay, mask_to_box
from segllm_ros.msg import SegmentationResult
from segllm_ros.node.results import answer_mask_msg, overlay_msg, result_msg

H, W = 60, 80
STAMP_NS = 12 * 10**9 + 345


def _segment(x0: int, x1: int, score: float) -> Segment:
    mask = np.zeros((H, W), dtype=bool)
    mask[20:40, x0:x1] = True
    return Segment(mask, mask_to_box(mask), score)


LEFT, RIGHT = _segment(5, 25, 0.9), _segment(50, 70, 0.7)


def _answer(kind: str, segments: list[Segment], text: str = "ok") -> Outcome:
    frame = Frame.create(np.full((H, W, 3), 90, np.uint8), STAMP_NS, "cam")
    mask = union(segments, (H, W))
    result = RoundResult(
        "c",
        3,
        "the red circles",
        text,
        [1],
        kind != NONE,
        mask,
        mask_to_box(mask),
        segments[0].score if segments else 0.0,
        frame,
        kind=kind,
        segments=segments,
    )
    status, message = answer_status(result)
    return Outcome(Query("c", "r1", result.query), status, message, result, frame)


def _pixels(image) -> np.ndarray:
    return np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.width)


@pytest.mark.parametrize(
    ("kind", "segments", "status"),
    [
        (ONE, [LEFT], SegmentationResult.STATUS_OK),
        (MANY, [LEFT, RIGHT], SegmentationResult.STATUS_OK),
        (AMBIGUOUS, [LEFT, RIGHT], SegmentationResult.STATUS_AMBIGUOUS),
    ],
)
def test_every_segment_is_published_and_the_first_fills_the_single_fields(
    kind: str, segments: list[Segment], status: int
) -> None:
    outcome = _answer(kind, segments)
    msg = result_msg(outcome)
    assert (msg.status, msg.answer_kind, msg.found) == (status, kind, True)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    assert len(msg.segments) == len(segments)
    for seg_msg, seg in zip(msg.segments, segments, strict=True):
        assert (seg_msg.mask.encoding, seg_msg.mask.header) == ("mono8", msg.header)
        np.testing.assert_array_equal(_pixels(seg_msg.mask), seg.mask * 255)
        x0, y0, x1, y1 = seg.box
        assert (seg_msg.box.x_offset, seg_msg.box.y_offset) == (x0, y0)
        assert (seg_msg.box.width, seg_msg.box.height) == (x1 - x0, y1 - y0)
        assert seg_msg.score == pytest.approx(seg.score)
    first = msg.segments[0]
    np.testing.assert_array_equal(_pixels(msg.mask), _pixels(first.mask))
    assert (msg.box, msg.score) == (first.box, first.score)


def test_a_plural_answer_publishes_the_union_on_the_mask_topic() -> None:
    outcome = _answer(MANY, [LEFT, RIGHT])
    result = outcome.result
    mask = answer_mask_msg(result, result_msg(outcome))
    np.testing.assert_array_equal(_pixels(mask), (LEFT.mask | RIGHT.mask) * 255)
    assert mask.header.frame_id == "cam"


def test_a_single_answer_publishes_its_mask() -> None:
    outcome = _answer(ONE, [LEFT])
    result = outcome.result
    np.testing.assert_array_equal(
        _pixels(answer_mask_msg(result, result_msg(outcome))), LEFT.mask * 255
    )


def test_a_question_publishes_an_empty_mask_but_every_candidate_in_the_result() -> None:
    question = "2 objects match 'the red circles': 1 on the left, 2 on the right. Which one?"
    outcome = _answer(AMBIGUOUS, [LEFT, RIGHT], text=question)
    result = outcome.result
    msg = result_msg(outcome)
    assert msg.text == msg.message == question
    mask = answer_mask_msg(result, msg)
    assert (mask.height, mask.width) == (H, W) and not _pixels(mask).any()


def test_nothing_found_has_no_segment_and_an_empty_full_size_mask() -> None:
    outcome = _answer(NONE, [])
    result = outcome.result
    msg = result_msg(outcome)
    assert (msg.status, msg.answer_kind, msg.found, list(msg.segments)) == (
        SegmentationResult.STATUS_NOT_FOUND,
        NONE,
        False,
        [],
    )
    assert "the red circles" in msg.message
    assert (msg.mask.height, msg.mask.width) == (H, W) and not _pixels(msg.mask).any()
    assert msg.box.width == 0 and msg.score == 0.0
    assert not _pixels(answer_mask_msg(result, msg)).any()


def test_a_refusal_has_no_kind() -> None:
    msg = result_msg(Outcome(Query("c", "r2", "x"), Status.NO_IMAGE, "no image received yet"))
    assert (msg.answer_kind, list(msg.segments), msg.found) == ("", [], False)


def test_the_overlay_numbers_the_candidates() -> None:
    outcome = _answer(AMBIGUOUS, [LEFT, RIGHT])
    result = outcome.result
    header = result_msg(outcome).header
    image = overlay_msg(result, header)
    assert (image.encoding, image.header) == ("rgb8", header)
    drawn = np.frombuffer(bytes(image.data), np.uint8).reshape(H, W, 3)
    expected = answer_overlay(result.frame.image, [LEFT.mask, RIGHT.mask], result.query)
    np.testing.assert_array_equal(drawn, expected)
