"""Issue 16, items 1 and 5, on the node over real DDS: the configured conversation limits
apply (they were replaced by the defaults), and every way a conversation ends (reset, LRU
eviction, TTL) also deletes its saved state, so state_dir holds exactly the live ones."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import pytest
import rclpy
from helpers import tiny_model
from ros_helpers import Operator, image_msg

from segllm_ros.msg import SegmentationQuery
from segllm_ros.msg import SegmentationResult as R
from segllm_ros.node.process import start_node_process, stop_node_process

NS = "/segllm_limits"


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


TTL_S = 12.0
"""Long enough that no conversation expires between the rounds of a loaded CI machine (4 s
did once: conversation "a" was gone before "b" was asked), short enough to wait out."""


def saved(state) -> set[str]:
    return {p.name for p in state.iterdir() if not p.name.startswith(".")}


def test_store_limits_and_state_dir_follow_the_parameters(ros, tmp_path):
    checkpoint = tmp_path / "model"
    tiny_model(seed=3).save_pretrained(checkpoint)
    state = tmp_path / "state"
    proc = start_node_process(
        checkpoint,
        tmp_path / "node.log",
        namespace=NS,
        max_rounds=2,
        max_conversations=2,
        conversation_ttl=TTL_S,
        state_dir=str(state),
        max_image_age=0.0,
    )
    op = Operator(NS)
    try:
        op.wait_ready()
        # Each query carries its frame: the test is about the store, not best-effort camera QoS.
        frame = image_msg(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
        op.ask = partial(op.ask, policy=SegmentationQuery.IMAGE_EMBEDDED, image=frame)
        ok = (R.STATUS_OK, R.STATUS_NOT_FOUND)
        assert op.ask("the red circle", conversation="a").status in ok
        assert op.ask("the blue square", conversation="a").status in ok
        third = op.ask("the green cross", conversation="a")
        assert third.status == R.STATUS_BAD_REFERENCE and "limit" in third.message

        assert op.ask("the red circle", conversation="b").status in ok
        assert saved(state) == {"a", "b"}
        assert op.ask("the red circle", conversation="c").status in ok  # evicts a
        assert saved(state) == {"b", "c"}
        gone = op.ask("<the output of round 1> again", conversation="a")
        assert gone.status == R.STATUS_BAD_REFERENCE
        assert "'a' was evicted (max_conversations=2" in gone.message

        assert op.reset("b").success
        assert saved(state) == {"c"}
        time.sleep(TTL_S + 0.5)  # c expires
        expired = op.ask("it again", conversation="c")
        assert expired.status == R.STATUS_BAD_REFERENCE and "expired" in expired.message
        assert saved(state) == set()
    finally:
        op.close()
        code = stop_node_process(proc)
    assert code == 0, (tmp_path / "node.log").read_text()[-3000:]
