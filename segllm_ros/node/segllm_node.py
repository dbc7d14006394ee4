"""The ROS 2 node: thin wiring between topics/services/actions and the query worker.

Lifecycle: configure loads the model and creates the interfaces, activate starts the worker,
deactivate stops it, cleanup releases everything. ``segllm_node`` runs configure + activate
at start unless ``--no-autostart`` is given.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header, String

from segllm_ros.action import Segment
from segllm_ros.engine.engine import load_engine
from segllm_ros.engine.worker import Job, Outcome, Query, QueryWorker, Status, WorkerConfig
from segllm_ros.interface.frame_buffer import FrameBuffer, stamp_to_ns
from segllm_ros.interface.image_codec import fill_image_msg
from segllm_ros.interface.mask_codec import box_to_roi, fill_mask_msg, overlay
from segllm_ros.msg import SegmentationQuery, SegmentationResult
from segllm_ros.node.params import NodeParams
from segllm_ros.paths import default_model_path
from segllm_ros.srv import ResetConversation

# Deep enough that a burst is answered (queue-full results) instead of dropped by DDS; the
# callback only validates and enqueues, so the reader history drains at once.
QUERY_DEPTH = 1000


def _ns_to_time(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class SegLLMNode(LifecycleNode):
    def __init__(self, node_name: str = "segllm", namespace: str = "segllm", **kwargs) -> None:
        super().__init__(node_name, namespace=namespace, **kwargs)
        for name, default, description, read_only in NodeParams.describe():
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=read_only))
        self.params: NodeParams | None = None
        self.worker: QueryWorker | None = None
        self.frames: FrameBuffer | None = None
        self._subs: list = []
        self._pubs: list = []
        self._srvs: list = []
        self._action: ActionServer | None = None
        self._group = ReentrantCallbackGroup()

    # ------------------------------------------------------------- lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        p = NodeParams(**{name: self.get_parameter(name).value
                          for name, *_ in NodeParams.describe()})
        self.params = p
        try:
            engine = load_engine(p.model_path or str(default_model_path()), device=p.device,
                                 backend=p.backend, precision=p.precision,
                                 engine_dir=p.engine_dir, mode=p.mode,
                                 generate_text=p.generate_text,
                                 mask_threshold=p.mask_threshold,
                                 max_conversations=p.max_conversations,
                                 max_rounds=p.max_rounds, ttl_s=p.conversation_ttl,
                                 state_dir=p.state_dir)
        except Exception as exc:
            self.get_logger().error(f"cannot load the model: {exc}")
            return TransitionCallbackReturn.FAILURE
        if p.state_dir:
            self.get_logger().info(f"restored {len(engine.store)} conversation(s) from "
                                   f"{p.state_dir}")
        self.frames = FrameBuffer(p.frame_buffer_size, max_pixels=p.max_image_pixels)
        self.worker = QueryWorker(engine, self.frames, WorkerConfig(
            queue_size=p.queue_size, max_query_chars=p.max_query_chars,
            max_image_age_s=p.max_image_age, stamp_tolerance_s=p.stamp_tolerance,
            max_image_pixels=p.max_image_pixels),
            now_ns=lambda: self.get_clock().now().nanoseconds)
        self._create_interfaces(p)
        self.get_logger().info(f"configured: model {engine.runtime.config.llm.get('model_type')} "
                               f"({p.backend}, {p.device}, {p.mode})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.worker.start()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.worker.stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._destroy_interfaces()
        self.worker = None
        self.frames = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        if self.worker is not None:
            self.worker.stop()
        self._destroy_interfaces()
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------ interfaces
    def _create_interfaces(self, p: NodeParams) -> None:
        if p.image_transport == "compressed":
            image_sub = self.create_subscription(
                CompressedImage, "image/compressed",
                lambda msg: self.frames.push(msg, compressed=True), qos_profile_sensor_data)
        else:
            image_sub = self.create_subscription(Image, "image", self.frames.push,
                                                 qos_profile_sensor_data)
        self.result_pub = self.create_publisher(SegmentationResult, "result", 10)
        self.mask_pub = self.create_publisher(Image, "mask", 10)
        self.overlay_pub = self.create_publisher(Image, "overlay", 10)
        self._subs = [
            image_sub,
            self.create_subscription(SegmentationQuery, "query", self._on_query, QUERY_DEPTH),
            self.create_subscription(String, "query_text", self._on_query_text, QUERY_DEPTH),
        ]
        self._pubs = [self.result_pub, self.mask_pub, self.overlay_pub]
        self._srvs = [self.create_service(ResetConversation, "reset", self._on_reset)]
        self._action = ActionServer(
            self, Segment, "segment", execute_callback=self._execute_goal,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _handle: CancelResponse.ACCEPT, callback_group=self._group)

    def _destroy_interfaces(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs:
            self.destroy_publisher(pub)
        for srv in self._srvs:
            self.destroy_service(srv)
        if self._action is not None:
            self._action.destroy()
        self._subs, self._pubs, self._srvs, self._action = [], [], [], None

    # -------------------------------------------------------------- callbacks
    def _query_from_msg(self, msg: SegmentationQuery) -> Query:
        """An empty conversation id means the default conversation (the query_text one)."""
        return Query(conversation_id=msg.conversation_id or self.params.default_conversation,
                     request_id=msg.request_id
                     or uuid.uuid4().hex[:12], text=msg.text,
                     ref_rounds=[int(r) for r in msg.ref_rounds],
                     image_policy=int(msg.image_policy),
                     image_stamp_ns=stamp_to_ns(msg.image_stamp),
                     image=msg.image if msg.image_policy == SegmentationQuery.IMAGE_EMBEDDED
                     else None, reset_before=msg.reset_before)

    def _on_query(self, msg: SegmentationQuery) -> None:
        self.worker.submit(Job(self._query_from_msg(msg), self._publish))

    def _on_query_text(self, msg: String) -> None:
        self.worker.submit(Job(Query(self.params.default_conversation, uuid.uuid4().hex[:12],
                                     msg.data), self._publish))

    def _on_reset(self, request, response):
        engine = self.worker.engine
        cid = request.conversation_id
        if cid and cid not in engine.store:
            response.success, response.cleared = False, 0
            response.message = f"unknown conversation {cid!r}"
            return response
        response.cleared = engine.reset(cid)  # saved state and caches included
        response.success = True
        response.message = f"cleared {response.cleared} conversation(s)"
        return response

    def _execute_goal(self, goal_handle):
        query = self._query_from_msg(goal_handle.request.query)
        done = threading.Event()
        box: dict[str, Outcome] = {}
        start = time.perf_counter()

        def on_stage(stage: str) -> None:
            goal_handle.publish_feedback(Segment.Feedback(
                stage=stage, elapsed_ms=(time.perf_counter() - start) * 1e3))

        def on_done(outcome: Outcome) -> None:
            box["outcome"] = outcome
            self._publish(outcome)
            done.set()

        job = Job(query, on_done, on_stage)
        on_stage("queued")
        self.worker.submit(job)
        while not done.wait(0.02):
            if goal_handle.is_cancel_requested:
                job.cancel.set()
        outcome = box["outcome"]
        result = Segment.Result(result=self._result_msg(outcome))
        if outcome.status == Status.CANCELED:
            goal_handle.canceled()
        elif outcome.status in (Status.OK, Status.NOT_FOUND):
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    # ------------------------------------------------------------- publishing
    def _result_msg(self, o: Outcome) -> SegmentationResult:
        msg = SegmentationResult()
        q, r = o.query, o.result
        msg.conversation_id, msg.request_id, msg.query = (q.conversation_id, q.request_id,
                                                          q.text)
        msg.status, msg.message = int(o.status), o.message
        msg.latency_ms, msg.queue_ms, msg.model_ms = o.latency_ms, o.queue_ms, o.model_ms
        if o.frame is not None:
            msg.header = Header(stamp=_ns_to_time(o.frame.stamp_ns), frame_id=o.frame.frame_id)
        if r is not None:
            msg.round_index, msg.text, msg.ref_rounds = r.round_index, r.text, r.ref_rounds
            msg.found, msg.score = r.found, r.score
            fill_mask_msg(msg.mask, r.mask)
            msg.mask.header = msg.header
            if r.box is not None:
                x, y, w, h = box_to_roi(r.box)
                msg.box = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)
        return msg

    def _publish(self, outcome: Outcome) -> None:
        msg = self._result_msg(outcome)
        self.result_pub.publish(msg)
        if outcome.result is None:
            return
        self.mask_pub.publish(msg.mask)
        if self.params.publish_overlay and self.overlay_pub.get_subscription_count() > 0:
            r = outcome.result
            image = overlay(np.asarray(r.frame.image), [r.mask], labels=[r.query])
            out = fill_image_msg(Image(), image, "rgb8")
            out.header = msg.header
            self.overlay_pub.publish(out)
