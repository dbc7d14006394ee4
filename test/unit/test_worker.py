"""The query worker on a fake engine: every refusal and failure becomes an outcome with a
status and a message, the queue is bounded, cancellation and stop answer every job."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from segllm_ros.engine.answers import AMBIGUOUS, MANY, NONE, ONE
from segllm_ros.engine.engine import RoundCancelled, RoundResult
from segllm_ros.engine.frames import UnsupportedFrameError
from segllm_ros.engine.history import Frame, Round
from segllm_ros.engine.references import BadReferenceError
from segllm_ros.engine.store import ConversationStore
from segllm_ros.engine.worker import (
    ImagePolicy,
    Job,
    Outcome,
    Query,
    QueryWorker,
    Status,
    WorkerConfig,
)
from segllm_ros.interface.frame_buffer import FrameBuffer
from segllm_ros.interface.image_codec import fill_image_msg

NOW_NS = 100 * 10**9
QUESTION = "2 objects match 'the red cup': 1 on the left, 2 on the right. Which one?"


class FakeEngine:
    """Records each call; ``fail`` raises instead of answering; ``gate`` holds a round."""

    def __init__(self) -> None:
        self.store = ConversationStore()
        self.calls: list[dict] = []
        self.fail: BaseException | None = None
        self.kind = ONE  # what every round answers
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def segment(
        self,
        cid: str,
        text: str,
        frame: Frame,
        ref_rounds=(),
        reset_before=False,
        on_stage: Callable[[str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> RoundResult:
        self.calls.append({"cid": cid, "text": text, "frame": frame, "reset": reset_before})
        self.entered.set()
        self.gate.wait(10)
        if should_cancel is not None and should_cancel():
            raise RoundCancelled("cancelled before reasoning")
        if self.fail is not None:
            raise self.fail
        if reset_before:
            self.store.reset(cid)
        conv = self.store.get(cid) or self.store.new_conversation(cid)
        found = self.kind != NONE
        mask = np.zeros((frame.height, frame.width), bool)
        mask[0, 0] = found
        answer = QUESTION if self.kind == AMBIGUOUS else "ok"
        rnd = Round.from_mask(conv.num_rounds + 1, text, answer, [], mask, 0.9, frame)
        self.store.add_round(conv, rnd, frame)
        return RoundResult(
            cid, rnd.index, text, answer, [], found, mask, rnd.box, 0.9, frame, kind=self.kind
        )


def image_msg(stamp_ns: int, value: int = 0) -> Image:
    msg = fill_image_msg(Image(), np.full((4, 6, 3), value, np.uint8), "rgb8")
    msg.header.stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    msg.header.frame_id = "cam"
    return msg


class Harness:
    def __init__(self, **config) -> None:
        self.engine = FakeEngine()
        self.frames = FrameBuffer(capacity=8)
        self.worker = QueryWorker(
            self.engine, self.frames, WorkerConfig(**config), now_ns=lambda: NOW_NS
        )
        self.outcomes: list[Outcome] = []
        self.done = threading.Condition()

    def _on_done(self, outcome: Outcome) -> None:
        with self.done:
            self.outcomes.append(outcome)
            self.done.notify_all()

    def submit(self, text: str = "the red cup", **fields) -> Job:
        job = Job(
            Query(
                fields.pop("conversation_id", "c"), fields.pop("request_id", "r"), text, **fields
            ),
            self._on_done,
        )
        self.worker.submit(job)
        return job

    def wait(self, count: int) -> list[Outcome]:
        with self.done:
            assert self.done.wait_for(lambda: len(self.outcomes) >= count, timeout=10)
        return self.outcomes


@pytest.fixture
def harness():
    h = Harness(queue_size=8)
    h.frames.push(image_msg(NOW_NS))
    h.worker.start()
    yield h
    h.engine.gate.set()
    h.worker.stop()


def test_a_query_is_answered_ok_with_the_latest_frame(harness: Harness) -> None:
    harness.submit()
    (outcome,) = harness.wait(1)
    assert outcome.status == Status.OK and outcome.result.round_index == 1
    assert outcome.frame.stamp_ns == NOW_NS and outcome.latency_ms >= outcome.queue_ms >= 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"text": "  "}, "empty"),
        ({"text": "x" * 1001}, "1001 characters, more than max_query_chars=1000"),
        ({"conversation_id": "c" * 257}, "conversation_id has 257 characters"),
        ({"request_id": "r" * 300}, "request_id has 300 characters"),
    ],
)
def test_bad_queries_are_refused_at_once(harness: Harness, fields: dict, message: str) -> None:
    text = fields.pop("text", "the cup")
    harness.submit(text, **fields)
    (outcome,) = harness.wait(1)
    assert outcome.status == Status.BAD_QUERY and message in outcome.message
    assert harness.engine.calls == []


def test_inactive_worker_refuses() -> None:
    h = Harness()
    h.submit()
    assert h.wait(1)[0].status == Status.MODEL_ERROR
    assert "not active" in h.outcomes[0].message


def test_full_queue_answers_queue_full() -> None:
    harness = Harness(queue_size=2)
    harness.frames.push(image_msg(NOW_NS))
    harness.worker.start()
    harness.engine.gate.clear()
    harness.submit(request_id="running")
    assert harness.engine.entered.wait(5)
    for i in range(2):
        harness.submit(request_id=f"queued{i}")
    harness.submit(request_id="overflow")
    first = harness.wait(1)[0]
    assert first.query.request_id == "overflow" and first.status == Status.QUEUE_FULL
    harness.engine.gate.set()
    assert [o.status for o in harness.wait(4)[1:]] == [Status.OK] * 3
    harness.worker.stop()


def test_frame_problems(harness: Harness) -> None:
    harness.frames.push(image_msg(NOW_NS - 5 * 10**9))  # newest is now 5 s old
    harness.submit()
    harness.submit(image_policy=ImagePolicy.BY_STAMP, image_stamp_ns=NOW_NS + 10**9)
    harness.submit(image_policy=ImagePolicy.EMBEDDED)
    harness.submit(image_policy=9)
    statuses = [(o.status, o.message) for o in harness.wait(4)]
    assert statuses[0][0] == Status.IMAGE_TOO_OLD and "5.00 s old" in statuses[0][1]
    assert statuses[1][0] == Status.NO_IMAGE and "0.050 s" in statuses[1][1]
    assert statuses[2][0] == Status.BAD_IMAGE and "carries no image" in statuses[2][1]
    assert statuses[3][0] == Status.BAD_QUERY and "image_policy 9" in statuses[3][1]


def test_no_frame_yet() -> None:
    h = Harness()
    h.worker.start()
    h.submit()
    assert h.wait(1)[0].status == Status.NO_IMAGE
    h.worker.stop()


def test_by_stamp_and_embedded_frames(harness: Harness) -> None:
    harness.frames.push(image_msg(NOW_NS + 10**9, value=7))
    harness.submit(image_policy=ImagePolicy.BY_STAMP, image_stamp_ns=NOW_NS + 10**6)
    harness.submit(image_policy=ImagePolicy.EMBEDDED, image=image_msg(42, value=3))
    first, second = harness.wait(2)
    assert first.frame.stamp_ns == NOW_NS and first.frame.image[0, 0, 0] == 0
    assert second.frame.stamp_ns == 42 and second.frame.image[0, 0, 0] == 3


def test_pinned_uses_round_one_frame_unless_reset_before(harness: Harness) -> None:
    harness.submit(image_policy=ImagePolicy.PINNED)
    harness.wait(1)
    harness.frames.push(image_msg(NOW_NS + 10**8, value=5))
    harness.submit(image_policy=ImagePolicy.PINNED)
    harness.submit(image_policy=ImagePolicy.PINNED, reset_before=True)
    _, pinned, fresh = harness.wait(3)
    assert fresh.status == Status.OK, fresh.message
    assert pinned.frame.stamp_ns == NOW_NS
    assert fresh.frame.stamp_ns == NOW_NS + 10**8 and fresh.result.round_index == 1
    assert harness.engine.calls[-1]["reset"] is True


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (BadReferenceError("round 4 does not exist"), Status.BAD_REFERENCE, "round 4"),
        (UnsupportedFrameError("too elongated"), Status.BAD_IMAGE, "too elongated"),
        (
            RuntimeError("CUDA error"),
            Status.MODEL_ERROR,
            "the model failed in round 1 "
            "(RuntimeError: CUDA error); the 0 earlier round(s) are kept",
        ),
    ],
)
def test_engine_errors_become_statuses_and_the_worker_goes_on(
    harness: Harness, error: Exception, status: Status, message: str
) -> None:
    harness.engine.fail = error
    harness.submit()
    first = harness.wait(1)[0]
    assert first.status == status and message in first.message
    harness.engine.fail = None
    harness.submit()
    assert harness.wait(2)[1].status == Status.OK


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        (ONE, Status.OK, ""),
        (MANY, Status.OK, ""),
        (NONE, Status.NOT_FOUND, "nothing in the frame matches 'the red cup'"),
        (AMBIGUOUS, Status.AMBIGUOUS, QUESTION),
    ],
)
def test_answer_kinds_become_statuses(
    harness: Harness, kind: str, status: Status, message: str
) -> None:
    harness.engine.kind = kind
    harness.submit()
    outcome = harness.wait(1)[0]
    assert (outcome.status, outcome.message) == (status, message)
    assert outcome.result.kind == kind


def test_cancel_while_queued_and_while_running(harness: Harness) -> None:
    harness.engine.gate.clear()
    running = harness.submit(request_id="running")
    assert harness.engine.entered.wait(5)
    queued = harness.submit(request_id="queued")
    queued.cancel.set()
    running.cancel.set()
    harness.engine.gate.set()
    outcomes = {o.query.request_id: o for o in harness.wait(2)}
    assert outcomes["running"].status == Status.CANCELED
    assert outcomes["queued"].status == Status.CANCELED
    assert "waiting in the queue" in outcomes["queued"].message
    assert len(harness.engine.calls) == 1


def test_stop_answers_every_queued_job(harness: Harness) -> None:
    harness.engine.gate.clear()
    harness.submit(request_id="running")
    assert harness.engine.entered.wait(5)
    harness.submit(request_id="a")
    harness.submit(request_id="b")
    threading.Timer(0.2, harness.engine.gate.set).start()
    harness.worker.stop()
    outcomes = {o.query.request_id: o.status for o in harness.wait(3)}
    assert outcomes == {"running": Status.OK, "a": Status.CANCELED, "b": Status.CANCELED}
