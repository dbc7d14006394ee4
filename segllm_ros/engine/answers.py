"""What one round answers: zero or more segments and the kind of answer.

An operator needs four kinds of answer (issue 17): ONE object, MANY (a plural query: every
match), AMBIGUOUS (a singular query that several objects satisfy: every candidate, and a
question), NONE (the named object is not there). The model predicts the segments (SAM's mask
tokens as instance slots, each with a presence score) and whether the query is plural; the kind
follows from those two predictions by the definitions above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ONE, MANY, AMBIGUOUS, NONE = "one", "many", "ambiguous", "none"
ANSWER_KINDS: tuple[str, ...] = (ONE, MANY, AMBIGUOUS, NONE)


@dataclass
class Segment:
    """One object of an answer: its mask at the frame's resolution, box and score."""

    mask: np.ndarray  # bool HxW
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    score: float  # the mask decoder's predicted IoU (presence) of this slot


def answer_kind(num_segments: int, plural: bool) -> str:
    """The kind of an answer with ``num_segments`` present slots to a (singular or plural)
    query."""
    if num_segments == 0:
        return NONE
    if plural:
        return MANY
    return ONE if num_segments == 1 else AMBIGUOUS


def union(segments: list[Segment], shape: tuple[int, int]) -> np.ndarray:
    """All segments' masks as one (what ``<the output of round i>`` means for a MANY round)."""
    out = np.zeros(shape, dtype=bool)
    for seg in segments:
        out |= seg.mask
    return out


def reading_order(centres: list[tuple[float, float]]) -> list[int]:
    """Indices of objects left to right (then top to bottom): the canonical order of an
    answer's segments, of the model's instance slots and of a clarification's numbers."""
    return sorted(range(len(centres)), key=lambda i: (centres[i][0], centres[i][1]))
