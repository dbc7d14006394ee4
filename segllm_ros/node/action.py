"""The ``segment`` action without blocking an executor thread per goal.

A goal is accepted only while the node is active and its queue has room; it then waits in the
worker's queue as ACCEPTED. When the worker has answered it, the worker thread calls
``goal_handle.execute`` with a callback that only sets the terminal state and returns the
result, so the executor runs one short task per goal instead of a thread that polls until the
round is done (rclpy 9.1's MultiThreadedExecutor stalls once every thread is held).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from segllm_ros.action import Segment
from segllm_ros.engine.worker import Job, Outcome, Query, QueryWorker, Status
from segllm_ros.msg import SegmentationQuery, SegmentationResult

#: Statuses that answer the query (the goal succeeds): an absent object or a question back is
#: an answer, not a failure of the action.
ANSWERED = frozenset({Status.OK, Status.NOT_FOUND, Status.AMBIGUOUS})


SERVICE_DEPTH = 1000
"""Requests each of the action's services (goal, result, cancel) queues. rclpy's default
service profile keeps 10: of 20 goals sent at once the rest were dropped, never answered."""


class SegmentAction:
    """Wires the action server to the worker the node currently has (None = not active)."""

    def __init__(
        self,
        node: Node,
        worker: Callable[[], QueryWorker | None],
        to_query: Callable[[SegmentationQuery], Query],
        to_result: Callable[[Outcome], SegmentationResult],
        publish: Callable[[Outcome], None],
        group: CallbackGroup,
    ) -> None:
        self._worker, self._to_query, self._to_result = worker, to_query, to_result
        self._publish = publish
        self._jobs: dict[bytes, Job] = {}
        self._lock = threading.Lock()
        self.server = ActionServer(
            node,
            Segment,
            "segment",
            execute_callback=self._no_execute,
            goal_callback=self._on_goal,
            handle_accepted_callback=self._on_accepted,
            cancel_callback=self._on_cancel,
            callback_group=group,
            goal_service_qos_profile=_service_qos(),
            result_service_qos_profile=_service_qos(),
            cancel_service_qos_profile=_service_qos(),
        )

    def _on_goal(self, _goal: Segment.Goal) -> GoalResponse:
        """Refuse at once what cannot be served: the node is not active or the queue is full."""
        worker = self._worker()
        if worker is None or worker.pending >= worker.config.queue_size:
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_accepted(self, goal_handle: ServerGoalHandle) -> None:
        key = bytes(goal_handle.goal_id.uuid)
        start = time.perf_counter()

        def on_stage(stage: str) -> None:
            goal_handle.publish_feedback(
                Segment.Feedback(stage=stage, elapsed_ms=(time.perf_counter() - start) * 1e3)
            )

        def on_done(outcome: Outcome) -> None:
            with self._lock:
                self._jobs.pop(key, None)
            self._publish(outcome)
            goal_handle.execute(lambda handle: self._finish(handle, outcome))

        job = Job(self._to_query(goal_handle.request.query), on_done, on_stage)
        with self._lock:
            self._jobs[key] = job
        on_stage("queued")
        worker = self._worker()
        if worker is None:  # deactivated between the goal and its acceptance
            on_done(Outcome(job.query, Status.MODEL_ERROR, "the node is not active"))
        else:
            worker.submit(job)

    def _on_cancel(self, goal_handle: ServerGoalHandle) -> CancelResponse:
        with self._lock:
            job = self._jobs.get(bytes(goal_handle.goal_id.uuid))
        if job is None:  # already answered
            return CancelResponse.REJECT
        job.cancel.set()
        return CancelResponse.ACCEPT

    def _finish(self, goal_handle: ServerGoalHandle, outcome: Outcome) -> Segment.Result:
        """Runs on the executor once the worker has answered: terminal state + result."""
        if outcome.status == Status.CANCELED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.status in ANSWERED:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return Segment.Result(result=self._to_result(outcome))

    @staticmethod
    def _no_execute(goal_handle: ServerGoalHandle) -> Segment.Result:
        """Never used: every goal is executed with its own finishing callback."""
        raise RuntimeError("segment goals are executed by the worker's answer")

    def destroy(self) -> None:
        self.server.destroy()


def _service_qos() -> QoSProfile:
    return QoSProfile(depth=SERVICE_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
