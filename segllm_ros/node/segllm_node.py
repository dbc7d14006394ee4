"""The ROS 2 node: thin wiring between topics/services/actions and the query worker.

Lifecycle: configure loads the model, activate starts the worker and the (lifecycle)
publishers, deactivate stops them, cleanup drops the model. ``segllm_node`` runs configure +
activate at start unless ``--no-autostart`` is given.

Every ROS entity is created once, at the first configure, and lives as long as the node:
lifecycle transitions never destroy an entity that another executor thread may be waiting
on. While the node is not active, goals are rejected, queries and frames are dropped (the
result publisher is inactive, so nothing could be answered), the reset service answers "not
configured" after cleanup, and ``/diagnostics`` reports the state. Transitions run in the
node's default (mutually exclusive) callback group, like the topic and service callbacks, so
none of those overlaps a transition.
"""

from __future__ import annotations

import gc
import uuid
from dataclasses import replace

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from segllm_ros.engine.engine import load_engine
from segllm_ros.engine.worker import Job, Outcome, Query, QueryWorker, WorkerConfig
from segllm_ros.interface.frame_buffer import FrameBuffer, stamp_to_ns
from segllm_ros.msg import SegmentationQuery, SegmentationResult
from segllm_ros.node.action import SegmentAction
from segllm_ros.node.diagnostics import Health, LatencyStats, diagnostic_array
from segllm_ros.node.params import NodeParams, check_change
from segllm_ros.node.results import answer_mask_msg, overlay_msg, result_msg
from segllm_ros.node.ros_logging import forward_python_logs
from segllm_ros.paths import default_model_path
from segllm_ros.srv import ResetConversation

# Deep enough that a burst is answered (queue-full results) instead of dropped by DDS; the
# callback only validates and enqueues, so the reader history drains at once.
QUERY_DEPTH = 1000
DIAGNOSTICS_PERIOD_S = 1.0


def _worker_config(p: NodeParams) -> WorkerConfig:
    return WorkerConfig(
        queue_size=p.queue_size,
        max_query_chars=p.max_query_chars,
        max_image_age_s=p.max_image_age,
        stamp_tolerance_s=p.stamp_tolerance,
        max_image_pixels=p.max_image_pixels,
    )


def _free_accelerator_memory() -> None:
    """Return the dropped model's cached CUDA blocks to the driver (no-op on CPU)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class SegLLMNode(LifecycleNode):
    def __init__(self, node_name: str = "segllm", namespace: str = "segllm", **kwargs) -> None:
        super().__init__(node_name, namespace=namespace, **kwargs)
        self._log_handler = forward_python_logs(self.get_logger())
        self.worker: QueryWorker | None = None
        self.frames: FrameBuffer | None = None
        self._active = False
        self.add_on_set_parameters_callback(self._check_parameters)
        for name, default, description, spec in NodeParams.describe():
            self.declare_parameter(name, default, spec.descriptor(description, default))
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.params = self._read_params()
        self.latency = LatencyStats()
        self._has_interfaces = False
        # From the start, so that a node that fails to configure is seen too.
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(
            DIAGNOSTICS_PERIOD_S,
            self._publish_diagnostics,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )

    def _read_params(self) -> NodeParams:
        return NodeParams(
            **{name: self.get_parameter(name).value for name, *_ in NodeParams.describe()}
        )

    @property
    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    # ------------------------------------------------------------- lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        p = self._read_params()
        self.params = p
        try:
            engine = load_engine(
                p.model_path or str(default_model_path()),
                device=p.device,
                backend=p.backend,
                precision=p.precision,
                engine_dir=p.engine_dir,
                mode=p.mode,
                generate_text=p.generate_text,
                mask_threshold=p.mask_threshold,
                max_conversations=p.max_conversations,
                max_rounds=p.max_rounds,
                ttl_s=p.conversation_ttl,
                state_dir=p.state_dir,
                llm_quant=p.llm_quant,
                llm_graphs=p.llm_graphs,
                compile_graphs=p.compile_graphs,
                compile_cache_dir=p.compile_cache_dir,
            )
        except Exception as exc:
            self.get_logger().error(f"cannot load the model: {exc}")
            return TransitionCallbackReturn.FAILURE
        if p.state_dir:
            self.get_logger().info(
                f"restored {len(engine.store)} conversation(s) from {p.state_dir}"
            )
        self.frames = FrameBuffer(p.frame_buffer_size, max_pixels=p.max_image_pixels)
        self.worker = QueryWorker(
            engine,
            self.frames,
            _worker_config(p),
            now_ns=lambda: self.get_clock().now().nanoseconds,
        )
        if not self._has_interfaces:  # once: later transitions never destroy entities
            self._create_interfaces(p)
            self._has_interfaces = True
        self.get_logger().info(
            f"configured: model {engine.runtime.config.llm.get('model_type')} "
            f"({p.backend}, {p.device}, {p.mode})"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.worker.start()
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop taking work, answer what is queued (CANCELED), then silence the publishers."""
        self._active = False
        self.worker.stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        if self.worker is not None:
            self.worker.stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Drop the engine (model, conversations, frames) and free its memory."""
        self.worker = None
        self.frames = None
        _free_accelerator_memory()

    def destroy_node(self) -> None:
        import logging

        logging.getLogger("segllm_ros").removeHandler(self._log_handler)
        super().destroy_node()

    # ------------------------------------------------------------ parameters
    def _check_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Refuse a change that cannot be applied now, with the reason (ranges are checked by
        rclpy from the descriptors before this runs)."""
        configured = self.worker is not None
        for param in parameters:
            if param.name in NodeParams.__dataclass_fields__:
                reason = check_change(param.name, param.value, configured)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        """Apply the runtime parameters at once (configure-time ones wait for configure)."""
        changed = {p.name: p.value for p in parameters if p.name in NodeParams.__dataclass_fields__}
        if not changed:
            return
        self.params = replace(self.params, **changed)
        worker, frames = self.worker, self.frames
        if worker is not None:
            worker.config = _worker_config(self.params)
        if frames is not None:
            frames.max_pixels = self.params.max_image_pixels
        self.get_logger().info(f"parameters set: {changed}")

    # ------------------------------------------------------------ interfaces
    def _create_interfaces(self, p: NodeParams) -> None:
        if p.image_transport == "compressed":
            self.create_subscription(
                CompressedImage,
                "image/compressed",
                lambda msg: self._on_image(msg, compressed=True),
                qos_profile_sensor_data,
            )
        else:
            self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data)
        self.create_subscription(SegmentationQuery, "query", self._on_query, QUERY_DEPTH)
        self.create_subscription(String, "query_text", self._on_query_text, QUERY_DEPTH)
        self.create_service(ResetConversation, "reset", self._on_reset)
        self.result_pub = self.create_lifecycle_publisher(SegmentationResult, "result", 10)
        self.mask_pub = self.create_lifecycle_publisher(Image, "mask", 10)
        self.overlay_pub = self.create_lifecycle_publisher(Image, "overlay", 10)
        self.action = SegmentAction(
            self,
            lambda: self.worker if self._active else None,
            self._query_from_msg,
            result_msg,
            self._publish,
            ReentrantCallbackGroup(),
        )

    def _publish_diagnostics(self) -> None:
        worker, p = self.worker, self.params
        health = Health(
            lifecycle_state=self.lifecycle_state,
            backend=p.backend,
            device=p.device,
            queue_depth=worker.pending if worker else 0,
            queue_size=worker.config.queue_size if worker else 0,
            latency=self.latency,
        )
        name = f"{self.get_fully_qualified_name()}: segmentation"
        self.diagnostics_pub.publish(
            diagnostic_array(name, health, self.get_clock().now().to_msg())
        )

    # -------------------------------------------------------------- callbacks
    def _query_from_msg(self, msg: SegmentationQuery) -> Query:
        """An empty conversation id means the default conversation (the query_text one)."""
        return Query(
            conversation_id=msg.conversation_id or self.params.default_conversation,
            request_id=msg.request_id or uuid.uuid4().hex[:12],
            text=msg.text,
            ref_rounds=[int(r) for r in msg.ref_rounds],
            image_policy=int(msg.image_policy),
            image_stamp_ns=stamp_to_ns(msg.image_stamp),
            image=msg.image if msg.image_policy == SegmentationQuery.IMAGE_EMBEDDED else None,
            reset_before=msg.reset_before,
        )

    def _on_image(self, msg: Image | CompressedImage, compressed: bool = False) -> None:
        if self._active:
            self.frames.push(msg, compressed=compressed)

    def _submit(self, query: Query) -> None:
        if not self._active:  # the result publisher is inactive: nobody could be answered
            self.get_logger().warning(
                "query dropped: the node is not active", throttle_duration_sec=5.0
            )
            return
        self.worker.submit(Job(query, self._publish))

    def _on_query(self, msg: SegmentationQuery) -> None:
        self._submit(self._query_from_msg(msg))

    def _on_query_text(self, msg: String) -> None:
        self._submit(Query(self.params.default_conversation, uuid.uuid4().hex[:12], msg.data))

    def _on_reset(self, request, response):
        if self.worker is None:
            response.success, response.cleared = False, 0
            response.message = (
                f"the node is not configured (lifecycle state: {self.lifecycle_state})"
            )
            return response
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

    # ------------------------------------------------------------- publishing
    def _publish(self, outcome: Outcome) -> None:
        """Result always; mask and overlay only while someone subscribes to them."""
        msg = result_msg(outcome)
        self.result_pub.publish(msg)
        r = outcome.result
        if r is None:
            return
        self.latency.add(outcome.latency_ms)
        if self.mask_pub.get_subscription_count() > 0:
            self.mask_pub.publish(answer_mask_msg(r, msg))
        if self.params.publish_overlay and self.overlay_pub.get_subscription_count() > 0:
            self.overlay_pub.publish(overlay_msg(r, msg.header))
