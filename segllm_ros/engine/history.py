"""The history of a multi-round conversation: frames, rounds and their masks.

SegLLM answers round N conditioned on the outputs of earlier rounds, so each conversation keeps
its rounds (masks as COCO RLE, boxes, answers) and the frames the masks belong to. This module
is the data model only; ``persistence`` writes it to disk and ``store`` bounds how many are
kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segllm_ros.engine.answers import ANSWER_KINDS, NONE, ONE, Segment, union
from segllm_ros.engine.references import BadReferenceError, describe_rounds
from segllm_ros.interface.mask_codec import mask_to_box, mask_to_rle, rle_to_mask

__all__ = ["Conversation", "ConversationFullError", "Frame", "Round", "image_digest"]


class ConversationFullError(ValueError):
    """A conversation reached the round limit; the operator must reset it.

    History is never dropped silently: a later round may refer to any earlier one.
    """


class CorruptConversationError(ValueError):
    """A saved conversation cannot be read back (bad JSON, missing or altered frame)."""


def image_digest(image: np.ndarray) -> str:
    """Content hash of an image, shape included (same bytes, other shape = other image)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((image.shape, image.dtype.str)).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Frame:
    """A camera image a round was answered on.

    ``key`` identifies the frame within a conversation; rounds refer to frames by key so one
    image shared by many rounds is stored once. The image is exposed read-only so a cached
    frame cannot be altered behind the history's back.
    """

    image: np.ndarray
    stamp_ns: int
    frame_id: str
    key: str = ""

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            raise ValueError(f"frame image must be an HxWx3 array, got shape {shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"frame image must be uint8 RGB, got {image.dtype}")
        view = image.view()
        view.flags.writeable = False
        object.__setattr__(self, "image", view)
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        if not self.key:
            object.__setattr__(self, "key", self.make_key(view, self.stamp_ns, self.frame_id))

    @staticmethod
    def make_key(image: np.ndarray, stamp_ns: int, frame_id: str) -> str:
        """``frame_id@stamp_ns``; a content hash when unstamped (stamp 0 is not unique)."""
        if stamp_ns:
            return f"{frame_id}@{int(stamp_ns)}"
        return f"{frame_id}#{image_digest(image)[:16]}"

    @classmethod
    def create(cls, image: np.ndarray, stamp_ns: int, frame_id: str) -> Frame:
        """A frame keyed by ``make_key``."""
        return cls(image=image, stamp_ns=stamp_ns, frame_id=frame_id)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.image.nbytes)


@dataclass
class Round:
    """One question/answer of a conversation and the mask it produced.

    The mask is kept as COCO RLE (compact, JSON-friendly); ``height``/``width`` let an
    empty result still produce a mask of the right size. A MANY or AMBIGUOUS answer also
    keeps each of its objects (``segments``: ``{"mask_rle", "box", "score"}`` in reading
    order); ``mask_rle`` is then their union, what a later reference to the round means.
    """

    index: int
    query: str
    answer: str
    ref_rounds: list[int]
    mask_rle: dict | None
    box: tuple[int, int, int, int] | None
    score: float
    frame_key: str
    height: int = 0
    width: int = 0
    kind: str = ONE
    segments: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ANSWER_KINDS:
            raise ValueError(f"answer kind must be one of {ANSWER_KINDS}, got {self.kind!r}")
        self.segments = [
            {
                "mask_rle": s["mask_rle"],
                "box": [int(v) for v in s["box"]],
                "score": float(s["score"]),
            }
            for s in self.segments
        ]
        if int(self.index) < 1:
            raise ValueError(f"round index is 1-based, got {self.index}")
        self.index = int(self.index)
        self.ref_rounds = [int(r) for r in self.ref_rounds]
        bad = [r for r in self.ref_rounds if not 1 <= r < self.index]
        if bad:
            raise BadReferenceError(
                f"round {self.index} cannot refer to round {bad[0]}: "
                f"only rounds 1..{self.index - 1} come before it"
            )
        self.score = float(self.score)
        if self.box is not None:
            if len(self.box) != 4:
                raise ValueError(f"box must be (x0, y0, x1, y1), got {self.box!r}")
            self.box = tuple(int(v) for v in self.box)  # type: ignore[assignment]
        if self.mask_rle is not None:
            rle = dict(self.mask_rle)
            if isinstance(rle.get("counts"), bytes):
                rle["counts"] = rle["counts"].decode("ascii")
            height, width = (int(v) for v in rle["size"])
            rle["size"] = [height, width]
            self.mask_rle = rle
            if (self.height or self.width) and (self.height, self.width) != (height, width):
                raise ValueError(
                    f"mask size {height}x{width} differs from round size {self.height}x{self.width}"
                )
            self.height, self.width = height, width
        self.height, self.width = int(self.height), int(self.width)

    @classmethod
    def from_mask(
        cls,
        index: int,
        query: str,
        answer: str,
        ref_rounds: list[int],
        mask: np.ndarray | None,
        score: float,
        frame: Frame,
    ) -> Round:
        """Encode a dense mask (RLE + box) for a round answered on ``frame``."""
        if mask is None:
            rle, box = None, None
        else:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (frame.height, frame.width):
                raise ValueError(
                    f"mask shape {mask.shape} differs from frame {frame.height}x{frame.width}"
                )
            rle, box = mask_to_rle(mask), mask_to_box(mask)
        return cls(
            index=index,
            query=query,
            answer=answer,
            ref_rounds=list(ref_rounds),
            mask_rle=rle,
            box=box,
            score=score,
            frame_key=frame.key,
            height=frame.height,
            width=frame.width,
        )

    @classmethod
    def from_segments(
        cls,
        index: int,
        query: str,
        answer: str,
        ref_rounds: list[int],
        segments: list[Segment],
        kind: str,
        frame: Frame,
    ) -> Round:
        """A round whose answer is ``segments`` (masks at ``frame``'s size, reading order)."""
        shape = (frame.height, frame.width)
        rnd = cls.from_mask(
            index,
            query,
            answer,
            ref_rounds,
            union(segments, shape) if segments else None,
            segments[0].score if segments else 0.0,
            frame,
        )
        rnd.kind = kind
        if len(segments) > 1:
            rnd.segments = [
                {"mask_rle": mask_to_rle(s.mask), "box": list(s.box), "score": s.score}
                for s in segments
            ]
        return rnd

    def answer_segments(self) -> list[Segment]:
        """The objects of the answer, in reading order (none for a NONE round)."""
        if self.segments:
            return [
                Segment(np.asarray(rle_to_mask(s["mask_rle"]), bool), tuple(s["box"]), s["score"])
                for s in self.segments
            ]
        if self.mask_rle is None or self.kind == NONE:
            return []
        return [Segment(self.mask(), self.box, self.score)]

    def mask(self) -> np.ndarray:
        """The round's mask as HxW bool (all False when the round found nothing)."""
        if self.mask_rle is None:
            return np.zeros((self.height, self.width), dtype=bool)
        return np.asarray(rle_to_mask(self.mask_rle), dtype=bool)

    def history_bytes(self) -> int:
        """Approximate bytes this round keeps (strings and RLE counts)."""
        size = len(self.query.encode()) + len(self.answer.encode())
        if self.mask_rle is not None:
            size += len(self.mask_rle.get("counts", ""))
        size += sum(len(s["mask_rle"].get("counts", "")) for s in self.segments)
        return size

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "query": self.query,
            "answer": self.answer,
            "ref_rounds": list(self.ref_rounds),
            "mask_rle": self.mask_rle,
            "box": list(self.box) if self.box is not None else None,
            "score": self.score,
            "frame_key": self.frame_key,
            "height": self.height,
            "width": self.width,
            "kind": self.kind,
            "segments": self.segments,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Round:
        return cls(
            index=data["index"],
            query=str(data["query"]),
            answer=str(data["answer"]),
            ref_rounds=list(data["ref_rounds"]),
            mask_rle=data["mask_rle"],
            box=tuple(data["box"]) if data["box"] is not None else None,
            score=data["score"],
            frame_key=str(data["frame_key"]),
            height=data["height"],
            width=data["width"],
            kind=data.get("kind", ONE if data["mask_rle"] is not None else NONE),
            segments=list(data.get("segments", [])),
        )


@dataclass(eq=False)
class Conversation:
    """The history of one conversation: its rounds and the frames they were answered on.

    Not locked itself: the worker serialises rounds, and the store takes its lock around the
    mutations it performs. What the inference engine caches per conversation (KV cache,
    reference tokens) lives in the engine, not here.
    """

    id: str
    rounds: list[Round] = field(default_factory=list)
    frames: dict[str, Frame] = field(default_factory=dict)
    pinned_frame_key: str | None = None
    last_used: float = 0.0
    max_rounds: int = 0

    @property
    def num_rounds(self) -> int:
        return len(self.rounds)

    @property
    def pinned_frame(self) -> Frame | None:
        """The frame of round 1: the image the LLM saw (once, in round 1)."""
        if self.pinned_frame_key is None:
            return None
        return self.frames.get(self.pinned_frame_key)

    def round(self, i: int) -> Round:
        """Round ``i`` (1-based)."""
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise BadReferenceError(f"round number must be an integer, got {i!r}")
        i = int(i)
        if i < 1:
            raise BadReferenceError(f"round {i} does not exist: rounds are numbered from 1")
        if i > len(self.rounds):
            raise BadReferenceError(
                f"round {i} does not exist: "
                f"this conversation has {describe_rounds(len(self.rounds))}"
            )
        return self.rounds[i - 1]

    def frame_of(self, i: int) -> Frame:
        """The frame round ``i`` was answered on."""
        return self.frames[self.round(i).frame_key]

    def ensure_room(self) -> None:
        """Raise ``ConversationFullError`` when no further round may be added."""
        if self.max_rounds and len(self.rounds) >= self.max_rounds:
            raise ConversationFullError(
                f"conversation {self.id!r} already has {len(self.rounds)} rounds, the limit; "
                "reset it to start a new conversation"
            )

    def add_round(self, round: Round, frame: Frame) -> None:
        """Append the next round, answered on ``frame``.

        Raises ``ConversationFullError`` at the round limit rather than forgetting old
        rounds, since a later query may refer to any of them.
        """
        self.ensure_room()
        expected = len(self.rounds) + 1
        if round.index != expected:
            raise ValueError(f"next round of {self.id!r} is {expected}, got index {round.index}")
        if not round.frame_key:
            round.frame_key = frame.key
        if round.frame_key != frame.key:
            raise ValueError(f"round frame_key {round.frame_key!r} is not frame {frame.key!r}")
        if not round.height and not round.width:
            round.height, round.width = frame.height, frame.width
        if (round.height, round.width) != (frame.height, frame.width):
            raise ValueError(
                f"round size {round.height}x{round.width} differs from frame "
                f"{frame.height}x{frame.width}"
            )
        known = self.frames.get(frame.key)
        if known is not None and known.image.shape != frame.image.shape:
            raise ValueError(f"frame key {frame.key!r} already names an image of another size")
        if known is None:
            self.frames[frame.key] = frame
        if self.pinned_frame_key is None:
            self.pinned_frame_key = frame.key
        self.rounds.append(round)

    def history_bytes(self) -> int:
        """Approximate bytes of stored history: RLE strings, texts and frame pixels."""
        return sum(r.history_bytes() for r in self.rounds) + sum(
            f.nbytes for f in self.frames.values()
        )

    def snapshot(self) -> Conversation:
        """A copy sharing the (immutable) frames, safe to save while the original grows."""
        return Conversation(
            id=self.id,
            rounds=[Round.from_json(r.to_json()) for r in self.rounds],
            frames=dict(self.frames),
            pinned_frame_key=self.pinned_frame_key,
            last_used=self.last_used,
            max_rounds=self.max_rounds,
        )
