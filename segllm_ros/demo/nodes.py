"""The demo's client nodes: a camera publishing the current scene and a scripted operator.

Import this module only after ``main.setup_ros_env`` has set the DDS variables: it imports
rclpy. Both nodes are spun by one executor in a background thread, so the operator's calls
block the script, not the callbacks.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from segllm_ros.demo.scenes import DemoError
from segllm_ros.interface.image_codec import fill_image_msg
from segllm_ros.msg import SegmentationQuery, SegmentationResult
from segllm_ros.srv import ResetConversation

CAMERA_HZ = 10.0
NS = "/segllm"


class Camera(Node):
    """Publishes the current scene at 10 Hz, stamped now, like a live camera would."""

    def __init__(self) -> None:
        super().__init__("demo_camera")
        self.pub = self.create_publisher(Image, f"{NS}/image", qos_profile_sensor_data)
        self._lock = threading.Lock()
        self._msg: Image | None = None
        self.sent_since_switch = 0
        self.first_stamp_ns = 0  # stamp of the first frame of the current scene
        self.create_timer(1.0 / CAMERA_HZ, self._tick)

    def show(self, rgb: np.ndarray) -> None:
        msg = fill_image_msg(Image(), rgb, "rgb8")
        msg.header.frame_id = "camera"
        with self._lock:
            self._msg, self.sent_since_switch, self.first_stamp_ns = msg, 0, 0

    def _tick(self) -> None:
        with self._lock:
            if self._msg is None:
                return
            now = self.get_clock().now()
            self._msg.header.stamp = now.to_msg()
            self.first_stamp_ns = self.first_stamp_ns or now.nanoseconds
            self.pub.publish(self._msg)
            if self.pub.get_subscription_count() > 0:
                self.sent_since_switch += 1


class Operator(Node):
    """Sends queries, collects results by request id, resets conversations."""

    def __init__(self) -> None:
        super().__init__("demo_operator")
        self.query_pub = self.create_publisher(SegmentationQuery, f"{NS}/query", 10)
        self.result_sub = self.create_subscription(
            SegmentationResult, f"{NS}/result", self._on_result, 10
        )
        self.reset_client = self.create_client(ResetConversation, f"{NS}/reset")
        self._results: dict[tuple[str, str], SegmentationResult] = {}
        self._cond = threading.Condition()

    def _on_result(self, msg: SegmentationResult) -> None:
        with self._cond:
            self._results[(msg.conversation_id, msg.request_id)] = msg
            self._cond.notify_all()

    def ask(
        self, cid: str, rid: str, text: str, refs: list[int], timeout: float
    ) -> SegmentationResult | None:
        msg = SegmentationQuery(
            conversation_id=cid,
            request_id=rid,
            text=text,
            ref_rounds=list(refs),
            image_policy=SegmentationQuery.IMAGE_LATEST,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        key = (cid, rid)
        with self._cond:
            self._results.pop(key, None)
            self.query_pub.publish(msg)
            self._cond.wait_for(lambda: key in self._results, timeout)
            return self._results.pop(key, None)

    def reset(self, cid: str, timeout: float) -> ResetConversation.Response:
        done = threading.Event()
        future = self.reset_client.call_async(ResetConversation.Request(conversation_id=cid))
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            raise DemoError(f"/segllm/reset did not answer within {timeout:.0f} s", 1)
        return future.result()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_ready(
    proc: subprocess.Popen, camera: Camera, operator: Operator, timeout: float, log_path: Path
) -> float:
    """Block until the node serves reset, has matched every topic and seen a few frames."""
    start = time.monotonic()
    checks = {
        "the /segllm/reset service": lambda: operator.reset_client.service_is_ready(),
        "the node's image subscription": lambda: camera.pub.get_subscription_count() > 0,
        "the node's query subscription": lambda: operator.query_pub.get_subscription_count() > 0,
        "the node's result publisher": lambda: operator.result_sub.get_publisher_count() > 0,
        "3 camera frames": lambda: camera.sent_since_switch >= 3,
    }
    for what, ready in checks.items():
        while not ready():
            # A failed configure leaves the node spinning with no interfaces: fail fast.
            if "cannot load the model" in log_tail(log_path, 50):
                raise DemoError(
                    f"the node could not load the model; {log_path} ends with:\n"
                    f"{log_tail(log_path)}",
                    2,
                )
            if proc.poll() is not None:
                raise DemoError(
                    f"the node exited with status {proc.returncode} before "
                    f"{what} was up; {log_path} ends with:\n{log_tail(log_path)}",
                    2,
                )
            if time.monotonic() - start > timeout:
                raise DemoError(
                    f"the node did not start within {timeout:.0f} s (waiting for "
                    f"{what}); {log_path} ends with:\n{log_tail(log_path)}",
                    2,
                )
            time.sleep(0.05)
    return time.monotonic() - start
