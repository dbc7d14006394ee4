"""Outcomes as messages: the result, the ``mask`` topic's image and the ``overlay`` image.

Why one module: the ``result`` topic and the ``segment`` action answer with the same
``SegmentationResult``, and where each kind of answer (issue 17) puts its masks is decided
here once. ``mask``/``box``/``score`` hold the first segment so that clients of single answers
keep working; ``segments`` holds them all.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from segllm_ros.engine.answers import AMBIGUOUS, Segment
from segllm_ros.engine.engine import RoundResult
from segllm_ros.engine.worker import Outcome
from segllm_ros.interface.image_codec import fill_image_msg
from segllm_ros.interface.mask_codec import answer_overlay, box_to_roi, fill_mask_msg
from segllm_ros.msg import ObjectSegment, SegmentationResult


def ns_to_time(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _roi(box: tuple[int, int, int, int]) -> RegionOfInterest:
    x, y, w, h = box_to_roi(box)
    return RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)


def _mask_msg(mask: np.ndarray, header: Header) -> Image:
    msg = fill_mask_msg(Image(), mask)
    msg.header = header
    return msg


def segment_msg(segment: Segment, header: Header) -> ObjectSegment:
    return ObjectSegment(
        mask=_mask_msg(segment.mask, header), box=_roi(segment.box), score=float(segment.score)
    )


def result_msg(o: Outcome) -> SegmentationResult:
    """The answer to one query; without a model result (a refusal) only ids and status."""
    msg = SegmentationResult()
    q, r = o.query, o.result
    msg.conversation_id, msg.request_id, msg.query = (q.conversation_id, q.request_id, q.text)
    msg.status, msg.message = int(o.status), o.message
    msg.latency_ms, msg.queue_ms, msg.model_ms = o.latency_ms, o.queue_ms, o.model_ms
    if o.frame is not None:
        msg.header = Header(stamp=ns_to_time(o.frame.stamp_ns), frame_id=o.frame.frame_id)
    if r is None:
        return msg
    msg.round_index, msg.text, msg.ref_rounds = r.round_index, r.text, r.ref_rounds
    msg.found, msg.answer_kind = r.found, r.kind
    msg.segments = [segment_msg(s, msg.header) for s in r.segments]
    if msg.segments:
        first = msg.segments[0]
        msg.mask, msg.box, msg.score = first.mask, first.box, first.score
    else:  # nothing found: an empty mask at the frame's size
        msg.mask, msg.score = _mask_msg(r.mask, msg.header), r.score
    return msg


def answer_mask_msg(r: RoundResult, result: SegmentationResult) -> Image:
    """What the ``mask`` topic carries: the objects the answer chose, one image (the union
    for a plural answer). Empty while it asks which one: a consumer of the bare mask (a grasp
    planner) must not act on a guess. ``result`` is this answer's message (reused when its
    ``mask`` already is that image)."""
    if r.kind == AMBIGUOUS:
        return _mask_msg(np.zeros_like(r.mask), result.header)
    if len(r.segments) > 1:
        return _mask_msg(r.mask, result.header)
    return result.mask


def overlay_msg(r: RoundResult, header: Header) -> Image:
    """The frame with every segment drawn, numbered in reading order when there are several."""
    image = answer_overlay(np.asarray(r.frame.image), [s.mask for s in r.segments], r.query)
    msg = fill_image_msg(Image(), image, "rgb8")
    msg.header = header
    return msg
