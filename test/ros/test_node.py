"""The node over real DDS, running as its own process (as `ros2 launch` starts it).

Uses a small random-weight SegLLM (the demo architecture): these tests are about the node's
contract (headers, sizes, rounds, reset, action, bad input), not mask quality.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from helpers import tiny_model
from rclpy.action.client import GoalStatus
from ros_helpers import Operator, image_msg, rss_mb, wait_future
from sensor_msgs.msg import Image
from std_msgs.msg import String

from segllm_ros.action import Segment
from segllm_ros.msg import SegmentationQuery, SegmentationResult
from segllm_ros.node.process import start_node_process as start_node
from segllm_ros.node.process import stop_node_process as stop_node

R = SegmentationResult
H, W = 96, 128


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_segllm")
    tiny_model(seed=7).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture(scope="module")
def node(ros, checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "node.log"
    proc = start_node(checkpoint, log, max_image_age=30.0, queue_size=8)
    yield proc
    assert stop_node(proc) == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def op(node):
    operator = Operator()
    operator.wait_ready()
    yield operator
    operator.close()


def frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


# Runs first (file order): the node has not received any frame yet.
def test_query_before_any_frame_is_no_image(op):
    r = op.ask("the red circle")
    assert r.status == R.STATUS_NO_IMAGE and "no image" in r.message
    assert r.mask.height == 0


def test_rounds_header_mask_and_box(op):
    src = image_msg(frame(1), frame_id="cam_optical")
    op.publish_image(src)
    first = op.ask("the red circle", conversation="basic")
    second = op.ask("the blue square to the left of <the output of round 1>", conversation="basic")
    third = op.ask("it again", conversation="basic")
    for i, r in enumerate((first, second, third), start=1):
        assert r.status in (R.STATUS_OK, R.STATUS_NOT_FOUND), r.message
        assert r.round_index == i
        assert r.header.stamp == src.header.stamp and r.header.frame_id == "cam_optical"
        assert (r.mask.height, r.mask.width, r.mask.encoding) == (H, W, "mono8")
        assert r.mask.header == r.header
        values = set(np.frombuffer(bytes(r.mask.data), np.uint8).tolist())
        assert values <= {0, 255}
        assert r.latency_ms >= r.model_ms > 0
    assert list(second.ref_rounds) == [1] and list(third.ref_rounds) == [2]
    if first.found:
        mask = np.frombuffer(bytes(first.mask.data), np.uint8).reshape(H, W) > 0
        ys, xs = np.nonzero(mask)
        assert (first.box.x_offset, first.box.y_offset) == (xs.min(), ys.min())
        assert first.box.width == xs.max() + 1 - xs.min()
    assert any(m.header == first.header for m in op.masks)


def test_result_uses_the_frame_actually_segmented(op):
    old = image_msg(frame(2), frame_id="a")
    op.publish_image(old)
    new = image_msg(frame(3), frame_id="b")
    # Frames are best effort: on a loaded CI machine every copy of the new one can be dropped
    # or still queued, so "latest" may legitimately be the old frame. Resend the new one until
    # the node segments it; every answer must carry the header of a frame that was published.
    headers = []
    for _ in range(5):
        op.publish_image(new, settle=0.5)
        latest = op.ask("the red circle", conversation="frames", reset_before=True)
        headers.append(latest.header)
        if latest.header == new.header:
            break
    assert headers[-1] == new.header, [h.frame_id for h in headers]
    assert all(h in (old.header, new.header) for h in headers)
    by_stamp = op.ask(
        "the red circle",
        conversation="frames-2",
        policy=SegmentationQuery.IMAGE_BY_STAMP,
        stamp_ns=old.header.stamp.sec * 10**9 + old.header.stamp.nanosec,
    )
    assert by_stamp.header == old.header
    pinned = op.ask("it again", conversation="frames-2", policy=SegmentationQuery.IMAGE_PINNED)
    assert pinned.header == old.header and pinned.round_index == 2


def test_reset_service(op):
    op.publish_image(image_msg(frame(4)))
    assert op.ask("the red circle", conversation="to-reset").round_index == 1
    assert op.ask("the red circle", conversation="to-reset").round_index == 2
    response = op.reset("to-reset")
    assert response.success and response.cleared == 1
    stale = op.ask("<the output of round 2> again", conversation="to-reset")
    assert stale.status == R.STATUS_BAD_REFERENCE
    assert "round 2 does not exist" in stale.message
    assert op.ask("the red circle", conversation="to-reset").round_index == 1
    unknown = op.reset("never-seen")
    assert not unknown.success and "unknown conversation" in unknown.message
    everything = op.reset("")
    assert everything.success and everything.cleared >= 1


def test_reset_before_flag(op):
    op.publish_image(image_msg(frame(5)))
    op.ask("the red circle", conversation="flag")
    assert op.ask("the red circle", conversation="flag", reset_before=True).round_index == 1


def test_query_text_drives_the_default_conversation(op):
    op.publish_image(image_msg(frame(6)))
    op.reset("")
    before = len(op.all_results)
    op.text_pub.publish(String(data="the green square"))
    deadline = time.monotonic() + 30
    while len(op.all_results) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    r = op.all_results[-1]
    assert r.conversation_id == "default" and r.query == "the green square"
    assert r.round_index == 1 and r.status in (R.STATUS_OK, R.STATUS_NOT_FOUND)


def test_action_succeeds_with_feedback(op):
    op.publish_image(image_msg(frame(7)))
    assert op.action.wait_for_server(timeout_sec=30)
    stages: list[str] = []
    goal = Segment.Goal(query=SegmentationQuery(conversation_id="action", text="the red circle"))
    handle = wait_future(
        op.action.send_goal_async(
            goal, feedback_callback=lambda fb: stages.append(fb.feedback.stage)
        )
    )
    assert handle.accepted
    response = wait_future(handle.get_result_async())
    assert response.status == GoalStatus.STATUS_SUCCEEDED
    assert response.result.result.round_index == 1
    assert response.result.result.conversation_id == "action"
    # Feedback travels apart from the result, and rclpy's client drops feedback that comes in
    # after the result: the stages seen are an in-order prefix.
    model_stages = ["encoding_image", "reasoning", "decoding_mask"]
    assert stages[0] == "queued" and len(stages) >= 2
    assert stages[1:] == model_stages[: len(stages) - 1]


def test_action_can_be_cancelled(op):
    """Cancel a goal right after it is accepted: its large embedded frame keeps the worker
    busy for hundreds of ms, and a cancel wins until the round is recorded, so the round
    stops and leaves nothing behind in the conversation."""
    big = image_msg(np.zeros((3000, 4000, 3), np.uint8))
    goal = Segment.Goal(
        query=SegmentationQuery(
            conversation_id="cancel-me",
            text="the red circle",
            image_policy=SegmentationQuery.IMAGE_EMBEDDED,
            image=big,
        )
    )
    handle = wait_future(op.action.send_goal_async(goal))
    wait_future(handle.cancel_goal_async())
    response = wait_future(handle.get_result_async())
    assert response.status == GoalStatus.STATUS_CANCELED
    assert response.result.result.status == R.STATUS_CANCELED
    op.publish_image(image_msg(frame(8)))
    assert op.ask("the red circle", conversation="cancel-me").round_index == 1


def _bad_image(encoding="rgb8", height=H, width=W, step=None, data=None) -> Image:
    msg = image_msg(frame(9))
    msg.encoding, msg.height, msg.width = encoding, height, width
    msg.step = width * 3 if step is None else step
    if data is not None:
        msg.data = data
    return msg


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(encoding="yuv422"), "unsupported encoding"),
        (dict(data=bytes(100)), "expected step*height"),
        (dict(height=0), "height"),
        (dict(height=100000, width=100000, data=bytes(10)), "exceeds max_pixels"),
    ],
)
def test_bad_images_are_refused_and_the_node_keeps_serving(op, bad, words):
    embedded = op.ask(
        "the red circle",
        conversation="bad",
        policy=SegmentationQuery.IMAGE_EMBEDDED,
        image=_bad_image(**bad),
    )
    assert embedded.status == R.STATUS_BAD_IMAGE and words in embedded.message
    op.publish_image(_bad_image(**bad))
    on_topic = op.ask("the red circle", conversation="bad")
    assert on_topic.status == R.STATUS_BAD_IMAGE and words in on_topic.message
    statuses = []
    for _ in range(5):  # best-effort camera QoS: a good frame soon replaces the bad one
        op.publish_image(image_msg(frame(10)))
        statuses.append(op.ask("the red circle", conversation="bad-then-good").status)
        if statuses[-1] != R.STATUS_BAD_IMAGE:
            break
    assert statuses[-1] in (R.STATUS_OK, R.STATUS_NOT_FOUND), statuses


def test_stale_frame_is_refused(op):
    op.publish_image(image_msg(frame(11), stamp_ns=time.time_ns() - 60 * 10**9))
    r = op.ask("the red circle", conversation="stale")
    assert r.status == R.STATUS_IMAGE_TOO_OLD and "max_image_age" in r.message


@pytest.mark.parametrize(
    "text, words", [("", "empty"), ("   ", "empty"), ("x" * 100_000, "max_query_chars")]
)
def test_bad_text_is_refused(op, text, words):
    r = op.ask(text, conversation="text")
    assert r.status == R.STATUS_BAD_QUERY and words in r.message


def test_references_to_missing_rounds(op):
    op.publish_image(image_msg(frame(12)))
    first = op.ask("it again", conversation="refs")
    assert first.status == R.STATUS_BAD_REFERENCE and "first round" in first.message
    op.ask("the red circle", conversation="refs")
    r = op.ask("the cup left of <the output of round 5>", conversation="refs")
    assert r.status == R.STATUS_BAD_REFERENCE and "round 5 does not exist" in r.message
    r = op.ask("the cup", conversation="refs", refs=[3])
    assert r.status == R.STATUS_BAD_REFERENCE
    assert op.ask("it again", conversation="refs").round_index == 2


def test_a_burst_of_1000_queries_is_bounded(op, node):
    op.publish_image(image_msg(frame(13)))
    op.ask("the red circle", conversation="warm")
    rss_before = rss_mb(node.pid)
    ids = [op.send("the red circle", conversation=f"flood{i % 50}") for i in range(1000)]
    results = [op.wait_result(rid, timeout=180) for rid in ids]
    statuses = [r.status for r in results]
    rejected = [r for r in results if r.status == R.STATUS_QUEUE_FULL]
    assert rejected and "queue is full" in rejected[0].message
    assert set(statuses) <= {
        R.STATUS_OK,
        R.STATUS_NOT_FOUND,
        R.STATUS_QUEUE_FULL,
        R.STATUS_IMAGE_TOO_OLD,
    }
    assert len(rejected) > 500
    growth = rss_mb(node.pid) - rss_before
    assert growth < 100, f"node memory grew by {growth:.0f} MB"
    op.publish_image(image_msg(frame(14)))
    assert op.ask("the red circle", conversation="after-flood").status in (
        R.STATUS_OK,
        R.STATUS_NOT_FOUND,
    )


def test_overlay_only_while_subscribed(op):
    op.publish_image(image_msg(frame(15)))
    op.ask("the red circle", conversation="overlay")
    assert op.overlays == []
    op.subscribe_overlay()
    deadline = time.monotonic() + 10
    while op.overlays == [] and time.monotonic() < deadline:
        op.ask("it again", conversation="overlay")
    assert op.overlays and op.overlays[-1].encoding == "rgb8"
    assert (op.overlays[-1].height, op.overlays[-1].width) == (H, W)


def test_restart_with_state_dir_continues_the_conversation(ros, checkpoint, tmp_path):
    state = tmp_path / "state"
    ns = "/segllm_restart"
    first = start_node(
        checkpoint, tmp_path / "a.log", namespace=ns, state_dir=str(state), max_image_age=0.0
    )
    operator = Operator(ns)
    try:
        operator.wait_ready()
        operator.publish_image(image_msg(frame(16), frame_id="kept"))
        r1 = operator.ask("the red circle", conversation="robot")
        operator.ask("the blue square to the left of it", conversation="robot")
        assert stop_node(first) == 0
        operator.wait_gone()
        second = start_node(
            checkpoint, tmp_path / "b.log", namespace=ns, state_dir=str(state), max_image_age=0.0
        )
        operator.wait_ready()
        r3 = operator.ask(
            "<the output of round 1> again",
            conversation="robot",
            policy=SegmentationQuery.IMAGE_PINNED,
        )
        assert r3.status in (R.STATUS_OK, R.STATUS_NOT_FOUND), r3.message
        assert r3.round_index == 3 and list(r3.ref_rounds) == [1]
        assert r3.header == r1.header  # the pinned frame came back from disk
        assert any(state.iterdir())
        assert operator.reset("").success  # a reset also forgets the saved state
        assert not any(state.iterdir())
        assert stop_node(second) == 0
    finally:
        operator.close()
        for proc in (first, locals().get("second")):
            if proc is not None and proc.poll() is None:
                proc.kill()


def test_model_failure_mid_round_keeps_the_conversation(ros, checkpoint):
    """The node in this process (so a fault can be injected into its model), over real DDS:
    the failing round is reported as MODEL_ERROR, the earlier rounds stay, the node serves on."""
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from segllm_ros.node.segllm_node import SegLLMNode

    node = SegLLMNode(
        namespace="segllm_fault",
        parameter_overrides=[
            Parameter("model_path", value=str(checkpoint)),
            Parameter("max_image_age", value=0.0),
        ],
    )
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    operator = Operator("/segllm_fault")
    try:
        node.trigger_configure()
        node.trigger_activate()
        operator.wait_ready()
        operator.publish_image(image_msg(frame(17)))
        assert operator.ask("the red circle", conversation="f").round_index == 1
        seg_head = node.worker.engine.model.seg_head

        def fault(*args, **kwargs):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        seg_head.forward = fault
        failed = operator.ask("the blue square left of it", conversation="f")
        assert failed.status == R.STATUS_MODEL_ERROR
        assert "round 2" in failed.message and "1 earlier round(s) are kept" in failed.message
        del seg_head.forward
        retry = operator.ask("the blue square left of it", conversation="f")
        assert retry.status in (R.STATUS_OK, R.STATUS_NOT_FOUND) and retry.round_index == 2
        assert list(retry.ref_rounds) == [1]
    finally:
        operator.close()
        node.trigger_deactivate()
        executor.shutdown()
        node.destroy_node()


def test_compressed_image_transport(ros, checkpoint, tmp_path):
    """With image_transport:=compressed the node reads image/compressed (JPEG/PNG)."""
    from sensor_msgs.msg import CompressedImage

    from segllm_ros.interface.image_codec import encode_compressed

    ns = "/segllm_compressed"
    proc = start_node(
        checkpoint,
        tmp_path / "c.log",
        namespace=ns,
        image_transport="compressed",
        max_image_age=0.0,
    )
    operator = Operator(ns)
    pub = operator.create_publisher(
        CompressedImage, f"{ns}/image/compressed", rclpy.qos.qos_profile_sensor_data
    )
    try:
        operator.wait_ready(image_pub=pub)

        def send(msg: CompressedImage) -> None:  # best-effort camera QoS: send a few times
            for _ in range(3):
                pub.publish(msg)
                time.sleep(0.05)
            time.sleep(0.3)

        msg = CompressedImage(format="png", data=encode_compressed(frame(18), "png"))
        msg.header = image_msg(frame(18), frame_id="jpeg_cam").header
        for _ in range(5):
            send(msg)
            try:  # discovery is asymmetric: the node's result writer may match us late
                ok = operator.wait_result(
                    operator.send("the red circle", conversation="compressed"), timeout=20
                )
            except TimeoutError:
                continue
            if ok.status != R.STATUS_NO_IMAGE:
                break
        assert ok.status in (R.STATUS_OK, R.STATUS_NOT_FOUND), ok.message
        assert ok.header.frame_id == "jpeg_cam" and (ok.mask.height, ok.mask.width) == (H, W)
        send(CompressedImage(format="jpeg", data=b"not a jpeg"))
        bad = operator.ask("the red circle", conversation="compressed-bad")
        assert bad.status == R.STATUS_BAD_IMAGE
    finally:
        operator.close()
        assert stop_node(proc) == 0
