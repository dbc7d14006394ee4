"""One worker thread serving a bounded queue of segmentation queries.

Plain Python (no ROS): the node turns messages into ``Query`` objects and ``Outcome``s back
into messages. Every failure becomes an ``Outcome`` with a status and a plain message; the
worker itself never dies on bad input or a model error.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from segllm_ros.engine.answers import AMBIGUOUS, NONE
from segllm_ros.engine.engine import (
    RoundCancelled,
    RoundResult,
    SegLLMEngine,
)
from segllm_ros.engine.frames import UnsupportedFrameError
from segllm_ros.engine.history import ConversationFullError, Frame
from segllm_ros.engine.references import BadReferenceError
from segllm_ros.engine.store import ConversationGoneError
from segllm_ros.interface.frame_buffer import BufferedFrame, FrameBuffer, stamp_to_ns
from segllm_ros.interface.image_codec import DEFAULT_MAX_PIXELS, ImageDecodeError, image_from_msg

_LOG = logging.getLogger(__name__)


class Status(IntEnum):
    """Mirrors the STATUS_* constants of SegmentationResult.msg."""

    OK = 0
    NO_IMAGE = 1
    IMAGE_TOO_OLD = 2
    BAD_IMAGE = 3
    BAD_QUERY = 4
    BAD_REFERENCE = 5
    QUEUE_FULL = 6
    MODEL_ERROR = 7
    CANCELED = 8
    NOT_FOUND = 9
    AMBIGUOUS = 10


class ImagePolicy(IntEnum):
    """Mirrors the IMAGE_* constants of SegmentationQuery.msg."""

    LATEST = 0
    BY_STAMP = 1
    PINNED = 2
    EMBEDDED = 3


@dataclass
class Query:
    conversation_id: str
    request_id: str
    text: str
    ref_rounds: list[int] = field(default_factory=list)
    image_policy: int = ImagePolicy.LATEST
    image_stamp_ns: int = 0
    image: Any = None  # sensor_msgs/Image for IMAGE_EMBEDDED
    reset_before: bool = False


@dataclass
class Outcome:
    query: Query
    status: Status
    message: str = ""
    result: RoundResult | None = None
    frame: Frame | None = None  # the frame actually segmented (its header goes out)
    queue_ms: float = 0.0
    model_ms: float = 0.0
    latency_ms: float = 0.0


@dataclass
class Job:
    query: Query
    on_done: Callable[[Outcome], None]
    on_stage: Callable[[str], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    received: float = field(default_factory=time.perf_counter)


@dataclass
class WorkerConfig:
    queue_size: int = 8
    max_query_chars: int = 1000
    max_image_age_s: float = 2.0
    stamp_tolerance_s: float = 0.05
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_id_chars: int = 256  # conversation_id / request_id


def answer_status(result: RoundResult) -> tuple[Status, str]:
    """The status and message of a round the model answered: ambiguous and absent objects
    are answers too, but the operator must see them without reading ``answer_kind``."""
    if result.kind == NONE:
        return Status.NOT_FOUND, f"nothing in the frame matches '{result.query}'"
    if result.kind == AMBIGUOUS:
        return Status.AMBIGUOUS, result.text  # the clarifying question
    return Status.OK, ""


class _Refused(Exception):
    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class QueryWorker:
    def __init__(
        self,
        engine: SegLLMEngine,
        frames: FrameBuffer,
        config: WorkerConfig,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.engine = engine
        self.frames = frames
        self.config = config
        self.now_ns = now_ns
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=config.queue_size)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="segllm-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the current round, refuse what is still queued, stop the thread."""
        if self._thread is None:
            return
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job, Outcome(job.query, Status.CANCELED, "the node is stopping"))
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # ---------------------------------------------------------------- submit
    def submit(self, job: Job) -> bool:
        """Queue a job; refused jobs (bad text, full queue) are answered at once."""
        problem = self._check_query(job.query)
        if problem:
            self._finish(job, Outcome(job.query, Status.BAD_QUERY, problem))
            return False
        if self._thread is None:
            self._finish(
                job,
                Outcome(job.query, Status.MODEL_ERROR, "the node is not active (lifecycle state)"),
            )
            return False
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._finish(
                job,
                Outcome(
                    job.query,
                    Status.QUEUE_FULL,
                    f"the query queue is full ({self.config.queue_size} "
                    "waiting); try again when earlier results arrive",
                ),
            )
            return False
        return True

    def _check_query(self, q: Query) -> str:
        """Why ``q`` cannot be queued ("" when it can)."""
        if not q.text.strip():
            return "the query text is empty"
        if len(q.text) > self.config.max_query_chars:
            return (
                f"the query text has {len(q.text)} characters, more than "
                f"max_query_chars={self.config.max_query_chars}"
            )
        for name in ("conversation_id", "request_id"):
            value = getattr(q, name)
            if len(value) > self.config.max_id_chars:
                return f"{name} has {len(value)} characters, more than {self.config.max_id_chars}"
        return ""

    # ---------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._finish(job, self._process(job))

    def _finish(self, job: Job, outcome: Outcome) -> None:
        outcome.latency_ms = (time.perf_counter() - job.received) * 1e3
        try:
            job.on_done(outcome)
        except Exception:
            _LOG.exception("publishing the result of request %r failed", job.query.request_id)

    def _process(self, job: Job) -> Outcome:
        q = job.query
        start = time.perf_counter()
        queue_ms = (start - job.received) * 1e3
        try:
            if job.cancel.is_set():
                raise _Refused(Status.CANCELED, "cancelled while waiting in the queue")
            frame = self._select_frame(q)
            result = self.engine.segment(
                q.conversation_id,
                q.text,
                frame,
                q.ref_rounds,
                reset_before=q.reset_before,
                on_stage=job.on_stage,
                should_cancel=job.cancel.is_set,
            )
        except _Refused as refused:
            return Outcome(q, refused.status, str(refused), queue_ms=queue_ms)
        except UnsupportedFrameError as exc:
            return Outcome(q, Status.BAD_IMAGE, str(exc), queue_ms=queue_ms)
        except (BadReferenceError, ConversationFullError) as exc:
            return Outcome(q, Status.BAD_REFERENCE, str(exc), queue_ms=queue_ms)
        except (RoundCancelled, ConversationGoneError) as exc:
            return Outcome(q, Status.CANCELED, str(exc), queue_ms=queue_ms)
        except Exception as exc:  # the model failed: this round is lost, the node goes on
            _LOG.exception("model failure in conversation %r", q.conversation_id)
            conv = self.engine.store.get(q.conversation_id)
            done = conv.num_rounds if conv else 0
            return Outcome(
                q,
                Status.MODEL_ERROR,
                f"the model failed in round {done + 1} ({type(exc).__name__}: "
                f"{exc}); the {done} earlier round(s) are kept",
                queue_ms=queue_ms,
            )
        model_ms = (time.perf_counter() - start) * 1e3
        status, message = answer_status(result)
        return Outcome(q, status, message, result, result.frame, queue_ms, model_ms)

    # ---------------------------------------------------------------- frames
    def _select_frame(self, q: Query) -> Frame:
        policy = q.image_policy
        if policy == ImagePolicy.EMBEDDED:
            return self._decode_embedded(q.image)
        if policy == ImagePolicy.PINNED:
            conv = None if q.reset_before else self.engine.store.get(q.conversation_id)
            if conv is not None and conv.pinned_frame is not None:
                return conv.pinned_frame
            policy = ImagePolicy.LATEST  # first round: pin what the camera sees now
        if policy == ImagePolicy.BY_STAMP:
            tol = int(self.config.stamp_tolerance_s * 1e9)
            buffered = self.frames.closest(q.image_stamp_ns, tol)
            if buffered is None:
                raise _Refused(
                    Status.NO_IMAGE,
                    f"no buffered frame within "
                    f"{self.config.stamp_tolerance_s:.3f} s of the requested stamp",
                )
            return self._to_frame(buffered)
        if policy != ImagePolicy.LATEST:
            raise _Refused(Status.BAD_QUERY, f"unknown image_policy {int(q.image_policy)}")
        buffered = self.frames.latest()
        if buffered is None:
            raise _Refused(Status.NO_IMAGE, "no image received yet on the image topic")
        max_age = self.config.max_image_age_s
        age = (self.now_ns() - buffered.stamp_ns) / 1e9
        if max_age > 0 and age > max_age:
            raise _Refused(
                Status.IMAGE_TOO_OLD,
                f"the newest frame is {age:.2f} s old, more than max_image_age={max_age:g} s",
            )
        return self._to_frame(buffered)

    def _to_frame(self, buffered: BufferedFrame) -> Frame:
        try:
            image = buffered.decode(self.config.max_image_pixels)
        except ImageDecodeError as exc:
            raise _Refused(Status.BAD_IMAGE, f"cannot use the frame: {exc}") from exc
        return Frame.create(image, buffered.stamp_ns, buffered.frame_id)

    def _decode_embedded(self, msg: Any) -> Frame:
        if msg is None:
            raise _Refused(Status.BAD_IMAGE, "IMAGE_EMBEDDED but the query carries no image")
        try:
            image = image_from_msg(msg, max_pixels=self.config.max_image_pixels)
        except ImageDecodeError as exc:
            raise _Refused(Status.BAD_IMAGE, f"cannot use the embedded image: {exc}") from exc
        return Frame.create(image, stamp_to_ns(msg.header.stamp), msg.header.frame_id)
