"""Real-DDS test plumbing: start the node as its own process, talk to it like an operator.

Every process gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and the test run's random
ROS_DOMAIN_ID (set in conftest.py), so nothing leaves loopback.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Log, Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from segllm_ros.action import Segment
from segllm_ros.interface.image_codec import fill_image_msg
from segllm_ros.msg import SegmentationQuery, SegmentationResult
from segllm_ros.srv import ResetConversation

NS = "/segllm"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def ns_time(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_msg(
    image: np.ndarray, stamp_ns: int | None = None, frame_id: str = "camera", encoding: str = "rgb8"
) -> Image:
    msg = fill_image_msg(Image(), image, encoding)
    msg.header.stamp = ns_time(time.time_ns() if stamp_ns is None else stamp_ns)
    msg.header.frame_id = frame_id
    return msg


class Operator(Node):
    """Camera + operator in one node: publishes frames, sends queries, collects results."""

    def __init__(self, ns: str = NS, subscribe_mask: bool = True) -> None:
        super().__init__(f"operator_{uuid.uuid4().hex[:6]}")
        self.ns = ns
        self.image_pub = self.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data)
        self.query_pub = self.create_publisher(SegmentationQuery, f"{ns}/query", 1000)
        self.text_pub = self.create_publisher(String, f"{ns}/query_text", 10)
        self.reset_client = self.create_client(ResetConversation, f"{ns}/reset")
        self.action = ActionClient(self, Segment, f"{ns}/segment")
        self.results: dict[str, SegmentationResult] = {}
        self.all_results: list[SegmentationResult] = []
        self.masks: list[Image] = []
        self.overlays: list[Image] = []
        self._cond = threading.Condition()
        self.result_sub = self.create_subscription(
            SegmentationResult, f"{ns}/result", self._on_result, 2000
        )
        self.mask_sub = (
            self.create_subscription(Image, f"{ns}/mask", self.masks.append, 10)
            if subscribe_mask
            else None
        )
        self.change_state_client = self.create_client(ChangeState, f"{ns}/segllm/change_state")
        self.get_state_client = self.create_client(GetState, f"{ns}/segllm/get_state")
        self.set_params_client = self.create_client(SetParameters, f"{ns}/segllm/set_parameters")
        self.executor_ = MultiThreadedExecutor(num_threads=2)
        self.executor_.add_node(self)
        self._thread = threading.Thread(target=self.executor_.spin, daemon=True)
        self._thread.start()

    def _on_result(self, msg: SegmentationResult) -> None:
        with self._cond:
            self.results[msg.request_id] = msg
            self.all_results.append(msg)
            self._cond.notify_all()

    def subscribe_overlay(self) -> None:
        self.create_subscription(Image, f"{self.ns}/overlay", self.overlays.append, 10)

    def wait_ready(self, timeout: float = 90.0, image_pub: Publisher | None = None) -> None:
        """Until the node serves its reset service, hears our image and query topics and
        publishes results to us (a result sent before that match is lost: results are not
        latched). ``image_pub`` replaces the raw image publisher (compressed transport)."""
        image_pub = image_pub or self.image_pub
        deadline = time.monotonic() + timeout
        if not self.reset_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError("the segllm node did not come up")
        while (
            self.query_pub.get_subscription_count() == 0
            or image_pub.get_subscription_count() == 0
            or self.result_sub.get_publisher_count() == 0
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("the segllm node is not matched on query/image/result")
            time.sleep(0.05)

    def wait_gone(self, timeout: float = 30.0) -> None:
        """Until discovery has dropped a stopped node's endpoints, so that a following
        ``wait_ready`` is answered by the node started next and not by the one before it."""
        deadline = time.monotonic() + timeout
        while (
            self.reset_client.service_is_ready()
            or self.query_pub.get_subscription_count() > 0
            or self.image_pub.get_subscription_count() > 0
            or self.result_sub.get_publisher_count() > 0
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("the stopped segllm node is still discovered")
            time.sleep(0.05)

    def publish_image(self, msg: Image, settle: float = 0.3, repeats: int = 3) -> None:
        """SensorData QoS is best effort: send the frame a few times, then let it arrive."""
        for _ in range(repeats):
            self.image_pub.publish(msg)
            time.sleep(0.05)
        time.sleep(settle)

    def send(
        self,
        text: str,
        conversation: str = "c",
        refs=(),
        policy: int = 0,
        image: Image | None = None,
        stamp_ns: int = 0,
        reset_before: bool = False,
    ) -> str:
        q = SegmentationQuery(
            conversation_id=conversation,
            request_id=uuid.uuid4().hex,
            text=text,
            ref_rounds=list(refs),
            image_policy=policy,
            image_stamp=ns_time(stamp_ns),
            reset_before=reset_before,
        )
        if image is not None:
            q.image = image
        self.query_pub.publish(q)
        return q.request_id

    def wait_result(self, request_id: str, timeout: float = 60.0) -> SegmentationResult:
        with self._cond:
            if not self._cond.wait_for(lambda: request_id in self.results, timeout):
                raise TimeoutError(f"no result for request {request_id}")
            return self.results[request_id]

    def ask(self, text: str, **kwargs) -> SegmentationResult:
        return self.wait_result(self.send(text, **kwargs))

    def subscribe_mask(self) -> None:
        self.mask_sub = self.create_subscription(Image, f"{self.ns}/mask", self.masks.append, 10)

    def reset(self, conversation: str = "") -> ResetConversation.Response:
        return wait_future(
            self.reset_client.call_async(ResetConversation.Request(conversation_id=conversation)),
            timeout=30,
        )

    def transition(self, label: str) -> bool:
        """Drive the node's lifecycle like a lifecycle manager: configure, activate, ..."""
        if not self.change_state_client.wait_for_service(timeout_sec=60):
            raise TimeoutError("no lifecycle change_state service")
        transition_id = getattr(Transition, f"TRANSITION_{label.upper()}")
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return wait_future(self.change_state_client.call_async(request), timeout=60).success

    def lifecycle_state(self) -> str:
        if not self.get_state_client.wait_for_service(timeout_sec=60):
            raise TimeoutError("no lifecycle get_state service")
        return wait_future(
            self.get_state_client.call_async(GetState.Request()), timeout=30
        ).current_state.label

    def set_parameter(self, name: str, value) -> tuple[bool, str]:
        """``ros2 param set``: (successful, reason)."""
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        elif isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        if not self.set_params_client.wait_for_service(timeout_sec=30):
            raise TimeoutError("no set_parameters service")
        request = SetParameters.Request(parameters=[Parameter(name=name, value=pv)])
        result = wait_future(self.set_params_client.call_async(request), timeout=30).results[0]
        return result.successful, result.reason

    def close(self) -> None:
        self.executor_.shutdown()
        self.destroy_node()


def wait_future(future, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise TimeoutError("future not done")
        time.sleep(0.01)
    return future.result()


class Collector:
    """Messages of one topic, gathered by a subscription of the operator node."""

    def __init__(self, node: Node, msg_type, topic: str, depth: int = 100) -> None:
        self.messages: list = []
        self.sub = node.create_subscription(msg_type, topic, self.messages.append, depth)

    def wait_for(self, predicate, timeout: float = 30.0):
        """The first message that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in list(self.messages):
                if predicate(msg):
                    return msg
            time.sleep(0.05)
        raise TimeoutError(f"no matching message on {self.sub.topic_name}")


def rosout(node: Node) -> Collector:
    return Collector(node, Log, "/rosout", 1000)


def ensure_rclpy() -> None:
    if not rclpy.ok():
        rclpy.init()
