"""The node, unchanged, on a released-style folder (``model_path:=<folder>``) over real DDS:
a 3-round conversation with references answers as the engine does on the same frame."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from released_folder import write_released_folder
from ros_helpers import Operator, image_msg

from segllm_ros.engine.engine import load_engine
from segllm_ros.engine.history import Frame
from segllm_ros.msg import SegmentationResult
from segllm_ros.node.process import start_node_process, stop_node_process

ROUNDS = [
    ("Segment the person wearing glasses.", ()),
    ("Segment his hair.[REF:1]", ()),
    ("Segment the bag that <instance 1> is carrying.", (2,)),
]


def test_upstream_family_node_conversation(tmp_path) -> None:
    folder = write_released_folder(tmp_path / "release", seed=0)
    rgb = np.random.default_rng(2).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    engine = load_engine(str(folder))
    frame = Frame(image=rgb, stamp_ns=1, frame_id="cam")
    expected = [engine.segment("c", q, frame, ref_rounds=list(r)) for q, r in ROUNDS]

    rclpy.init()
    log = tmp_path / "node.log"
    proc = start_node_process(folder, log, max_image_age=300.0)
    op = Operator()
    try:
        op.wait_ready()
        op.publish_image(image_msg(rgb, frame_id="cam"))
        got = [op.ask(q, conversation="released", refs=r) for q, r in ROUNDS]
    finally:
        op.close()
        code = stop_node_process(proc)
        rclpy.shutdown()
    assert code == 0, log.read_text()[-3000:]
    for r, e in zip(got, expected, strict=True):
        assert r.status == SegmentationResult.STATUS_OK, r.message
        assert (list(r.ref_rounds), r.text, r.answer_kind) == (e.ref_rounds, e.text, e.kind)
        mask = np.frombuffer(bytes(r.mask.data), np.uint8).reshape(rgb.shape[:2]) > 0
        np.testing.assert_array_equal(mask, e.mask)
        assert r.score == pytest.approx(e.score, abs=1e-4)
    assert "configured: model llama" in log.read_text()
