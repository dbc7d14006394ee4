"""Ask which one: the question of an AMBIGUOUS answer and the reading of its reply.

An AMBIGUOUS round (issue 17) returns every candidate instead of guessing. The operator must
be able to tell the candidates apart by where they are ("1 on the left, 2 on the right") and
answer in their own words ("the left one", "the second one", "<candidate 2>"). Positions come
from the candidates' boxes alone, so the question, the reading of the reply and the numbers
drawn on the overlay agree. Candidates are numbered from 1 in the order they are given
(reading order, ``answers.reading_order``). Pure Python: the engine, the node and the data
generators share it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from segllm_ros.engine.references import BadReferenceError

__all__ = [
    "CANDIDATE_TOKEN",
    "MIN_SEPARATION",
    "candidate_positions",
    "clarifying_question",
    "format_candidate",
    "resolve_clarification",
]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)

#: How a reply names a candidate by number, e.g. ``<candidate 2>`` (1-based).
CANDIDATE_TOKEN = "<candidate {k}>"

#: Two candidates are told apart along an axis only when their centres lie at least this
#: fraction of their mean size apart on it: "the left one" must be visibly further left.
MIN_SEPARATION = 0.5

_ORDINALS = (
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
)


@dataclass(frozen=True)
class _Axis:
    """One image axis and the words for its two ends."""

    index: int  # 0: x (box[0], box[2]); 1: y (box[1], box[3])
    low: str  # the end with small coordinates
    high: str
    preposition: str  # "on the left", "at the top"
    extreme: str  # "on the far left", "at the very top"


_X = _Axis(0, "left", "right", "on", "far")
_Y = _Axis(1, "top", "bottom", "at", "very")
_SIDES = {"left": (_X, False), "right": (_X, True), "top": (_Y, False), "bottom": (_Y, True)}
_SIDES |= {"upper": _SIDES["top"], "lower": _SIDES["bottom"]}
_MIDDLE = "in the middle"


def format_candidate(k: int) -> str:
    """Candidate ``k`` (1-based) written as a reply token: ``<candidate 2>``."""
    return CANDIDATE_TOKEN.format(k=k)


# ----------------------------------------------------------------------------- geometry
def _centre(box: Box, axis: _Axis) -> float:
    return (box[axis.index] + box[axis.index + 2]) / 2


def _extent(box: Box, axis: _Axis) -> int:
    return box[axis.index + 2] - box[axis.index]


def _separated(boxes: Sequence[Box], axis: _Axis, a: int, b: int) -> bool:
    size = (_extent(boxes[a], axis) + _extent(boxes[b], axis)) / 2
    gap = abs(_centre(boxes[a], axis) - _centre(boxes[b], axis))
    return gap > 0 and gap >= MIN_SEPARATION * size


def _order(boxes: Sequence[Box], axis: _Axis) -> list[int]:
    """Candidate indices from the axis' low end (left, top) to its high end."""
    return sorted(range(len(boxes)), key=lambda i: _centre(boxes[i], axis))


def _axes_by_spread(boxes: Sequence[Box]) -> list[_Axis]:
    """Both axes, the one along which the candidates spread most first (x on a tie)."""

    def spread(axis: _Axis) -> float:
        centres = [_centre(b, axis) for b in boxes]
        return max(centres) - min(centres)

    return sorted((_X, _Y), key=spread, reverse=True)


# ---------------------------------------------------------------------------- the question
def _rank_phrase(rank: int, n: int, axis: _Axis) -> str | None:
    """Where the ``rank``-th of ``n`` candidates (from the low end) lies on ``axis``."""
    middle = (n - 1) / 2
    if rank == middle:
        return _MIDDLE
    side, k = (axis.low, rank) if rank < middle else (axis.high, n - 1 - rank)
    if k == 0:
        extreme = f"{axis.extreme} " if n >= 4 else ""
        return f"{axis.preposition} the {extreme}{side}"
    if k < len(_ORDINALS):
        return f"{_ORDINALS[k]} from the {side}"
    return None


def _position_words(boxes: Sequence[Box]) -> list[str] | None:
    """A distinct position phrase per candidate on the first axis (most spread first) that
    separates them all; None when neither does."""
    if len(boxes) < 2:
        return None
    for axis in _axes_by_spread(boxes):
        order = _order(boxes, axis)
        if not all(_separated(boxes, axis, a, b) for a, b in pairwise(order)):
            continue
        phrases: list[str | None] = [None] * len(boxes)
        for rank, index in enumerate(order):
            phrases[index] = _rank_phrase(rank, len(boxes), axis)
        if all(phrases):
            return [p for p in phrases if p]
    return None


def candidate_positions(boxes: Sequence[Box]) -> list[str]:
    """A short, distinct position phrase per candidate ("on the left", "at the top",
    "second from the right", ...); "number i" for all when no words tell them apart."""
    words = _position_words(boxes)
    return words or [f"number {i}" for i in range(1, len(boxes) + 1)]


def clarifying_question(query: str, boxes: Sequence[Box]) -> str:
    """The question an AMBIGUOUS answer asks, e.g. "2 objects match 'the red circle': 1 on
    the left, 2 on the right. Which one?"."""
    n = len(boxes)
    if n < 2:
        raise ValueError(f"a clarifying question needs at least 2 candidates, got {n}")
    quoted = query.strip().rstrip(".?!").strip()
    words = _position_words(boxes)
    if words is None:
        numbers = "1 and 2" if n == 2 else f"1 to {n}"
        return f"{n} objects match '{quoted}', numbered {numbers} from left to right. Which one?"
    listing = ", ".join(f"{i} {w}" for i, w in enumerate(words, start=1))
    return f"{n} objects match '{quoted}': {listing}. Which one?"


# ------------------------------------------------------------------------------- the reply
_ORDINAL_WORDS = "|".join(_ORDINALS)
_REPLY = re.compile(
    rf"""
    ^(?:(?:i\s+)?(?:mean|meant|want|take|pick|choose|select)\s+|it'?s\s+|it\s+is\s+)?
    (?:the\s+)?(?:one\s+)?
    (?:
        <\s*candidate\s+(?P<token>[-+]?\d+)\s*>
      | (?:(?:number|candidate|option|no\.?|\#)\s*)?(?P<number>[-+]?\d+)
      | (?P<ordinal>{_ORDINAL_WORDS}|\d+(?:st|nd|rd|th)|last)
        (?:\s+(?:one\s+)?from\s+the\s+(?P<end>left|right|top|bottom))?
      | (?:(?:on|at|in|to)\s+the\s+)?(?:(?:far|very)\s+)?
        (?P<side>left|right|top|bottom|upper|lower|middle|centre|center)(?:most)?
    )
    (?:\s+(?:one|object|candidate))?(?:\s+please)?$
    """,
    re.VERBOSE,
)


def _number(k: int, n: int) -> int:
    if not 1 <= k <= n:
        raise BadReferenceError(
            f"candidate {k} does not exist: {n} objects matched, numbered 1 to {n}"
        )
    return k - 1


def _ordinal_value(word: str, n: int) -> int:
    if word == "last":
        return n
    if word in _ORDINALS:
        return _ORDINALS.index(word) + 1
    return int(word[:-2])


def _on_axis(reply: str, boxes: Sequence[Box], axis: _Axis, from_high: bool, rank: int) -> int:
    """The ``rank``-th candidate (0-based) from one end of ``axis``, if it stands apart from
    its neighbours there."""
    n = len(boxes)
    order = _order(boxes, axis)
    if from_high:
        order.reverse()
    if not 0 <= rank < n:
        raise BadReferenceError(f"'{reply}': there are only {n} candidates")
    chosen = order[rank]
    for neighbour in order[max(rank - 1, 0) : rank + 2]:
        if neighbour != chosen and not _separated(boxes, axis, chosen, neighbour):
            first, second = sorted((chosen + 1, neighbour + 1))
            raise BadReferenceError(
                f"'{reply}' does not tell candidates {first} and {second} apart; "
                f"answer with a number from 1 to {n}"
            )
    return chosen


def resolve_clarification(reply: str, boxes: Sequence[Box]) -> int | None:
    """The candidate (0-based) a reply to a clarifying question chooses, or None when the
    reply is not such an answer (then it is an ordinary new query).

    Understands numbers ("2", "number 2", "<candidate 2>"), ordinals ("the second one", "the
    2nd", "the last", "second from the left") and positions ("left", "the one on the left",
    "the rightmost one", "the top one", "the middle one"). Raises ``BadReferenceError`` when
    the reply names a candidate that does not exist or a position that does not single one
    out, so the operator is told instead of getting a mask for the wrong object.
    """
    text = " ".join(reply.lower().replace(",", " ").split()).strip(" .!?'\"")
    match = _REPLY.match(text)
    if match is None:
        return None
    n = len(boxes)
    if n == 0:
        raise BadReferenceError(f"'{text}' answers a question, but there are no candidates")
    number = match["token"] or match["number"]
    if number is not None:
        return _number(int(number), n)
    if match["ordinal"] is not None:
        k = _ordinal_value(match["ordinal"], n)
        if match["end"] is None:
            return _number(k, n)
        axis, from_high = _SIDES[match["end"]]
        return _on_axis(text, boxes, axis, from_high, k - 1)
    side = match["side"]
    if side in _SIDES:
        axis, from_high = _SIDES[side]
        return _on_axis(text, boxes, axis, from_high, 0)
    words = _position_words(boxes) or []  # "middle", "centre": the one the question named so
    if _MIDDLE not in words:
        raise BadReferenceError(
            f"'{text}': none of the {n} candidates is in the middle; "
            f"answer with a number from 1 to {n}"
        )
    return words.index(_MIDDLE)
