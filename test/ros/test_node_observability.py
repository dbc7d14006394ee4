"""Issue 16, "ROS 2 correctness", over real DDS: runtime parameters take effect and bad values
are refused with a reason, engine logs reach /rosout with their severity, /diagnostics reports
the node at 1 Hz, and the mask topic is published to a subscriber."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from helpers import tiny_model
from rcl_interfaces.msg import Log
from ros_helpers import Collector, Operator, image_msg, rosout

from segllm_ros.msg import SegmentationQuery
from segllm_ros.msg import SegmentationResult as R
from segllm_ros.node.process import start_node_process, stop_node_process

NS = "/segllm_observed"


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def test_parameters_logs_diagnostics_and_mask(ros, tmp_path):
    checkpoint = tmp_path / "model"
    tiny_model(seed=5).save_pretrained(checkpoint)
    proc = start_node_process(
        checkpoint, tmp_path / "node.log", namespace=NS, max_conversations=1, max_image_age=0.0
    )
    op = Operator(NS)
    logs = rosout(op)
    diagnostics = Collector(op, DiagnosticArray, "/diagnostics")
    try:
        op.wait_ready()
        op.subscribe_mask()
        frame = image_msg(np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8))
        ask = partial(op.ask, policy=SegmentationQuery.IMAGE_EMBEDDED, image=frame)
        ok = (R.STATUS_OK, R.STATUS_NOT_FOUND)

        # Runtime parameter: takes effect at once.
        assert op.set_parameter("max_query_chars", 5) == (True, "")
        refused = ask("the red circle", conversation="a")
        assert refused.status == R.STATUS_BAD_QUERY and "max_query_chars=5" in refused.message
        assert op.set_parameter("max_query_chars", 1000)[0]
        # Refused with a reason: a configure-time parameter while configured, a bad choice,
        # an out-of-range value (rclpy checks the descriptor's range).
        ok_set, reason = op.set_parameter("max_conversations", 4)
        assert not ok_set and "configured" in reason
        ok_set, reason = op.set_parameter("backend", "openvino")
        assert not ok_set and "backend must be one of" in reason
        assert not op.set_parameter("max_image_age", -1.0)[0]

        # Engine logs reach /rosout: a second conversation evicts the first (INFO).
        assert ask("the red circle", conversation="a").status in ok
        assert ask("the red circle", conversation="b").status in ok
        evicted = logs.wait_for(lambda m: "evicted" in m.msg and "'a'" in m.msg)
        assert evicted.level == Log.INFO and evicted.name.endswith("segllm")

        # /diagnostics at 1 Hz, with the numbers an operator needs.
        def answered(msg: DiagnosticArray) -> int:
            values = {kv.key: kv.value for kv in msg.status[0].values} if msg.status else {}
            return int(values.get("answered", 0))

        status = diagnostics.wait_for(lambda m: answered(m) >= 2).status[0]
        values = {kv.key: kv.value for kv in status.values}
        assert values["lifecycle_state"] == "active" and values["backend"] == "torch"
        assert values["queue_size"] == "8" and float(values["rss_mb"]) > 0
        assert status.message == "serving"

        # The mask goes to a subscriber, with the result's header.
        assert op.masks and op.masks[-1].encoding == "mono8"
    finally:
        op.close()
        code = stop_node_process(proc)
    assert code == 0, (tmp_path / "node.log").read_text()[-3000:]
