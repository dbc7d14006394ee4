"""Tabletop rounds whose answer is not one object (issue 17): plural queries (MANY),
singular names that fit a twin pair (AMBIGUOUS, always followed by the operator's reply that
picks one), and objects that are not on the table (NONE).

Why twins for ambiguity: "the red circle" with two identical red circles is ambiguous by
construction, and the reply ("the left one", "the second one", "<candidate 2>") names one
of the candidates the node offered, numbered in reading order (left to right).
"""

from __future__ import annotations

import numpy as np

from segllm_ros.engine.answers import AMBIGUOUS, MANY, NONE, ONE, reading_order
from segllm_ros.engine.clarify import format_candidate

PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "cross": "crosses",
}
ORDINALS: tuple[str, ...] = ("first", "second", "third", "fourth")
MAX_MATCHES = 4
"""Largest answer a plural round asks for: the model's instance slots (SAM's mask tokens)."""

WORDS: tuple[str, ...] = (
    "all the objects both one",
    *(format_candidate(k) for k in range(1, MAX_MATCHES + 1)),
    *PLURALS.values(),
    *ORDINALS,
)
"""Text these rounds add to the vocabulary (beside colours, shapes and side words)."""


def in_reading_order(scene, indices: list[int]) -> list[int]:
    """``indices`` sorted left to right (then top to bottom), the order of an answer."""
    return [indices[i] for i in reading_order([scene.objects[j].center for j in indices])]


def plural_options(scene) -> list[tuple[list[str], list[int]]]:
    """(phrasings, members) of every plural query with 2..MAX_MATCHES matches: by colour, by
    shape, and the twin pair by its name."""
    options = []
    objects = scene.objects
    for colour in sorted({o.color for o in objects}):
        members = [i for i, o in enumerate(objects) if o.color == colour]
        phrases = [f"the {colour} objects", f"all the {colour} objects"]
        options.append((phrases, members))
    for shape in sorted({o.shape for o in objects}):
        members = [i for i, o in enumerate(objects) if o.shape == shape]
        options.append(([f"the {PLURALS[shape]}", f"all the {PLURALS[shape]}"], members))
    for i, o in enumerate(objects):
        twin = scene.twin_of(i)
        if twin is not None and i < twin:
            plural = f"{o.color} {PLURALS[o.shape]}"
            options.append(([f"both {plural}", f"the {plural}"], [i, twin]))
    return [
        (phrases, in_reading_order(scene, members))
        for phrases, members in options
        if 2 <= len(members) <= MAX_MATCHES
    ]


def absent_options(
    scene, shapes: tuple[str, ...], colours: tuple[str, ...]
) -> list[tuple[str, bool]]:
    """(query, plural) naming nothing on the table: a (colour, shape) pair, a colour or a
    shape that no object has."""
    present = {(o.color, o.shape) for o in scene.objects}
    options = [(f"the {c} {s}", False) for s in shapes for c in colours if (c, s) not in present]
    used_colours = {o.color for o in scene.objects}
    used_shapes = {o.shape for o in scene.objects}
    options += [(f"all the {c} objects", True) for c in colours if c not in used_colours]
    options += [(f"the {PLURALS[s]}", True) for s in shapes if s not in used_shapes]
    return options


def ambiguous_options(scene) -> list[list[int]]:
    """The twin pairs, in reading order: "the {name}" fits both."""
    return [
        in_reading_order(scene, [i, twin])
        for i in range(len(scene.objects))
        if (twin := scene.twin_of(i)) is not None and i < twin
    ]


def side_words(scene, candidates: list[int]) -> list[str]:
    """Side word per candidate of a pair, on the axis where their centres differ most."""
    (ax, ay), (bx, by) = (scene.objects[i].center for i in candidates)
    if abs(ax - bx) >= abs(ay - by):
        return ["left", "right"] if ax < bx else ["right", "left"]
    return ["top", "bottom"] if ay < by else ["bottom", "top"]


def clarify_reply(rng: np.random.Generator, scene, candidates: list[int]) -> tuple[str, int]:
    """The operator's answer to "which one?": (reply, chosen object)."""
    pick = int(rng.integers(len(candidates)))
    form = int(rng.integers(4))
    if form == 0:
        reply = f"the {side_words(scene, candidates)[pick]} one"
    elif form == 1:
        reply = f"the one on the {side_words(scene, candidates)[pick]}"
    elif form == 2:
        reply = f"the {ORDINALS[pick]} one"
    else:
        reply = format_candidate(pick + 1)
    return reply, candidates[pick]


KIND_ANSWERS = {"plural": MANY, "ambiguous": AMBIGUOUS, "absent": NONE, "clarify": ONE}
"""Round kind of the generator -> the answer kind the model must give."""
