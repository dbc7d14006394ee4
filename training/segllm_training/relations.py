"""Positional relations between two boxes, phrased the way SegLLM queries use them.

Why a separate module: the synthetic data generator writes phrases like "the red circle to the
left of <the output of round 1>", and the tests (and any later evaluation) must be able to
recompute the very same phrase from the two boxes. Keeping the rule in one small pure function
means the text the model is trained on and the geometry it is checked against cannot drift apart.

Boxes are ``(x0, y0, x1, y1)`` in pixels with *exclusive* right/bottom edges (``x1``/``y1`` is
one past the last covered pixel), image coordinates (``y`` grows downwards). The phrase answers
"a is ... b":

====================  ==========================================================
phrase                condition (checked in this order)
====================  ==========================================================
"the same as"         ``same_instance=True`` (a and b are the same object)
"overlapping with"    the boxes intersect with positive area
"to the top left of"  ``a.x1 <= b.x0`` and ``a.y1 <= b.y0``
"to the top right of" ``a.x0 >= b.x1`` and ``a.y1 <= b.y0``
"to the bottom left   ``a.x1 <= b.x0`` and ``a.y0 >= b.y1``
of"
"to the bottom right  ``a.x0 >= b.x1`` and ``a.y0 >= b.y1``
of"
"to the left of"      ``a.x1 <= b.x0`` only (the y ranges overlap)
"to the right of"     ``a.x0 >= b.x1`` only
"above"               ``a.y1 <= b.y0`` only (the x ranges overlap)
"below"               ``a.y0 >= b.y1`` only
====================  ==========================================================

Touching edges (``a.x1 == b.x0``) count as separated: zero-area contact is not an overlap, so a
box whose right edge touches another's left edge is "to the left of" it, and boxes meeting only
at a corner are in a diagonal relation. Any positive-area intersection, even one pixel, is
"overlapping with".

With ``min_overlap`` set (MRSeg, after the SegLLM appendix: positions from box edges *and*
centres) boxes overlap only when the intersection covers at least that share of the smaller
box, and an axis also separates a from b when each box's centre lies beyond the other's near
edge (``a.cx < b.x0`` and ``b.cx > a.x1``: "left"); when no axis does (grazing boxes), the axis
along which the centres differ most decides.
"""

from __future__ import annotations

from collections.abc import Sequence

Box = Sequence[int]

SAME = "the same as"
OVERLAP = "overlapping with"
LEFT = "to the left of"
RIGHT = "to the right of"
ABOVE = "above"
BELOW = "below"
TOP_LEFT = "to the top left of"
TOP_RIGHT = "to the top right of"
BOTTOM_LEFT = "to the bottom left of"
BOTTOM_RIGHT = "to the bottom right of"

RELATIONS: tuple[str, ...] = (
    SAME,
    OVERLAP,
    LEFT,
    RIGHT,
    ABOVE,
    BELOW,
    TOP_LEFT,
    TOP_RIGHT,
    BOTTOM_LEFT,
    BOTTOM_RIGHT,
)
"""Every phrase :func:`positional_relation` can return (10: same, overlap, 4 sides, 4 corners)."""

# (horizontal, vertical) separation -> phrase; None means "ranges overlap on that axis".
_PHRASES: dict[tuple[str | None, str | None], str] = {
    ("left", None): LEFT,
    ("right", None): RIGHT,
    (None, "above"): ABOVE,
    (None, "below"): BELOW,
    ("left", "above"): TOP_LEFT,
    ("right", "above"): TOP_RIGHT,
    ("left", "below"): BOTTOM_LEFT,
    ("right", "below"): BOTTOM_RIGHT,
}

_INVERSE: dict[str, str] = {
    SAME: SAME,
    OVERLAP: OVERLAP,
    LEFT: RIGHT,
    RIGHT: LEFT,
    ABOVE: BELOW,
    BELOW: ABOVE,
    TOP_LEFT: BOTTOM_RIGHT,
    BOTTOM_RIGHT: TOP_LEFT,
    TOP_RIGHT: BOTTOM_LEFT,
    BOTTOM_LEFT: TOP_RIGHT,
}


def _check_box(box: Box, name: str) -> tuple[int, int, int, int]:
    """Validate a box; degenerate boxes would make "left" and "right" both true."""
    if len(box) != 4:
        raise ValueError(f"{name} must be (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"{name} must have positive width and height, got {box!r}")
    return x0, y0, x1, y1


def _side(a0: int, a1: int, b0: int, b1: int, before: str, after: str, centres: bool) -> str | None:
    """One axis: ``before`` when a's range ends where b's starts (or, with ``centres``, when
    each centre lies beyond the other's near edge), ``after`` for the mirror case, else None.
    Centres are compared doubled to stay in integers."""
    if a1 <= b0 or (centres and a0 + a1 < 2 * b0 and b0 + b1 > 2 * a1):
        return before
    if a0 >= b1 or (centres and a0 + a1 > 2 * b1 and b0 + b1 < 2 * a0):
        return after
    return None


def positional_relation(
    box_a: Box, box_b: Box, same_instance: bool = False, min_overlap: float | None = None
) -> str:
    """Return the phrase for "a is ... b" (see the module docstring for the rules).

    Why edges first: edge separation is unambiguous and symmetric (``relation(a, b)`` is
    always the inverse of ``relation(b, a)``), so a generated query is never "to the left of"
    something it sticks out beyond. ``min_overlap`` (None: the edge rule alone) adds the
    centres, so boxes that only graze each other get a direction; symmetry is kept.
    """
    ax0, ay0, ax1, ay1 = _check_box(box_a, "box_a")
    bx0, by0, bx1, by1 = _check_box(box_b, "box_b")
    if same_instance:
        return SAME
    overlap_w = min(ax1, bx1) - max(ax0, bx0)
    overlap_h = min(ay1, by1) - max(ay0, by0)
    if overlap_w > 0 and overlap_h > 0:
        smaller = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
        if min_overlap is None or overlap_w * overlap_h >= min_overlap * smaller:
            return OVERLAP
    centres = min_overlap is not None
    horizontal = _side(ax0, ax1, bx0, bx1, "left", "right", centres)
    vertical = _side(ay0, ay1, by0, by1, "above", "below", centres)
    if horizontal is None and vertical is None:  # grazing boxes, no centre beyond an edge
        dx, dy = (ax0 + ax1) - (bx0 + bx1), (ay0 + ay1) - (by0 + by1)
        if dx == dy == 0:
            return OVERLAP
        if abs(dx) >= abs(dy):
            horizontal = "left" if dx < 0 else "right"
        else:
            vertical = "above" if dy < 0 else "below"
    return _PHRASES[(horizontal, vertical)]


def inverse_relation(phrase: str) -> str:
    """Return the phrase for "b is ... a" given "a is <phrase> b".

    Why: lets callers (and tests) flip a relation without recomputing it from boxes;
    left/right and above/below swap, diagonals mirror through the centre, "the same as" and
    "overlapping with" are symmetric.
    """
    try:
        return _INVERSE[phrase]
    except KeyError:
        raise ValueError(f"unknown relation phrase {phrase!r}") from None
