"""The answer fields of issue 17 over real DDS: ``answer_kind`` and ``segments`` on the result
topic and in the action's result, the ``mask`` topic and the numbered overlay.

Uses the bundled demo model on a bundled demo scene, asked for an object the scene holds once:
an ordinary round, whose answer is one object. What the other kinds (many, ambiguous, none)
put where is tested on the message builders (test/unit/test_result_msgs.py); that the model
predicts them is the model's test.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
import rclpy
from helpers import DEMO_MODEL, ROOT
from rclpy.action.client import GoalStatus
from ros_helpers import NS, Collector, Operator, image_msg, wait_future
from sensor_msgs.msg import Image

from segllm_ros.action import Segment
from segllm_ros.demo.scenes import load_demo_data
from segllm_ros.interface.mask_codec import answer_overlay
from segllm_ros.msg import SegmentationQuery, SegmentationResult
from segllm_ros.node.process import start_node_process, stop_node_process

R = SegmentationResult


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, str]:
    """The first demo scene and a query naming an object it holds once."""
    first = load_demo_data(ROOT / "data" / "demo")[0]
    names = Counter(obj["name"] for obj in first["objects"])
    unique = next(name for name, count in names.items() if count == 1)
    return first["rgb"], f"the {unique}"


class AnswerOperator(Operator):
    """An operator that also watches the ``mask`` and ``overlay`` topics."""

    def __init__(self) -> None:
        super().__init__(subscribe_mask=False)
        self.mask_topic = Collector(self, Image, f"{NS}/mask")
        self.overlay_topic = Collector(self, Image, f"{NS}/overlay")

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Also until the node publishes masks and overlays to us: it draws them only for
        matched subscribers."""
        super().wait_ready(timeout)
        deadline = time.monotonic() + timeout
        for topic in (self.mask_topic, self.overlay_topic):
            while topic.sub.get_publisher_count() == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{topic.sub.topic_name} is not matched")
                time.sleep(0.05)


@pytest.fixture(scope="module")
def op(tmp_path_factory):
    rclpy.init()
    log = tmp_path_factory.mktemp("node_answers") / "node.log"
    proc = start_node_process(DEMO_MODEL, log, max_image_age=300.0)
    operator = AnswerOperator()
    try:
        operator.wait_ready()
        yield operator
    finally:
        operator.close()
        code = stop_node_process(proc)
        rclpy.shutdown()
        assert code == 0, log.read_text()[-3000:]


def _pixels(image) -> np.ndarray:
    return np.frombuffer(bytes(image.data), np.uint8)


def _check_one_segment(r: SegmentationResult, rgb: np.ndarray) -> None:
    assert r.status == R.STATUS_OK, r.message
    assert (r.answer_kind, r.found) == (R.KIND_ONE, True)
    assert len(r.segments) == 1
    (seg,) = r.segments
    assert (seg.mask.height, seg.mask.width, seg.mask.encoding) == (*rgb.shape[:2], "mono8")
    assert seg.mask.header == r.header
    np.testing.assert_array_equal(_pixels(seg.mask), _pixels(r.mask))
    assert _pixels(seg.mask).any()
    assert (seg.box, seg.score) == (r.box, r.score)


def test_an_ordinary_round_is_one_segment_on_every_output(op, scene) -> None:
    rgb, query = scene
    op.publish_image(image_msg(rgb, frame_id="table"))
    r = op.ask(query, conversation="answers")
    _check_one_segment(r, rgb)

    def same_frame(msg: Image) -> bool:
        return msg.header == r.header

    np.testing.assert_array_equal(_pixels(op.mask_topic.wait_for(same_frame)), _pixels(r.mask))
    overlay = op.overlay_topic.wait_for(same_frame)
    mask = _pixels(r.mask).reshape(rgb.shape[:2]) > 0
    expected = answer_overlay(rgb, [mask], query)
    np.testing.assert_array_equal(_pixels(overlay).reshape(rgb.shape), expected)


def test_the_action_result_carries_the_segments(op, scene) -> None:
    rgb, query = scene
    assert op.action.wait_for_server(timeout_sec=30)
    goal = Segment.Goal(
        query=SegmentationQuery(
            conversation_id="answers-action",
            text=query,
            image_policy=SegmentationQuery.IMAGE_EMBEDDED,
            image=image_msg(rgb),
        )
    )
    handle = wait_future(op.action.send_goal_async(goal))
    assert handle.accepted
    response = wait_future(handle.get_result_async())
    assert response.status == GoalStatus.STATUS_SUCCEEDED
    _check_one_segment(response.result.result, rgb)
