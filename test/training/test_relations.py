"""Positional relation phrases: the 10 cases, touching edges, and inverse symmetry."""

from __future__ import annotations

import numpy as np
import pytest

from segllm_training.relations import RELATIONS, inverse_relation, positional_relation

B = (40, 40, 60, 60)  # reference box "b"


@pytest.mark.parametrize(
    ("box_a", "expected"),
    [
        ((10, 45, 20, 55), "to the left of"),
        ((70, 45, 80, 55), "to the right of"),
        ((45, 10, 55, 20), "above"),
        ((45, 70, 55, 80), "below"),
        ((10, 10, 20, 20), "to the top left of"),
        ((70, 10, 80, 20), "to the top right of"),
        ((10, 70, 20, 80), "to the bottom left of"),
        ((70, 70, 80, 80), "to the bottom right of"),
        ((50, 50, 70, 70), "overlapping with"),
        ((30, 30, 70, 70), "overlapping with"),  # a contains b
        ((45, 45, 55, 55), "overlapping with"),  # b contains a
        # Partially separated on one axis only: the other axis decides.
        ((10, 55, 20, 75), "to the left of"),
        ((45, 0, 80, 30), "above"),
    ],
)
def test_cases(box_a: tuple[int, int, int, int], expected: str) -> None:
    assert positional_relation(box_a, B) == expected


def test_same_instance_only_when_flagged() -> None:
    assert positional_relation(B, B, same_instance=True) == "the same as"
    assert positional_relation((0, 0, 5, 5), B, same_instance=True) == "the same as"
    assert positional_relation(B, B) == "overlapping with"


def test_touching_edges_are_separated() -> None:
    assert positional_relation((30, 45, 40, 55), B) == "to the left of"  # a.x1 == b.x0
    assert positional_relation((60, 45, 70, 55), B) == "to the right of"  # a.x0 == b.x1
    assert positional_relation((45, 30, 55, 40), B) == "above"  # a.y1 == b.y0
    assert positional_relation((45, 60, 55, 70), B) == "below"  # a.y0 == b.y1
    # Corner contact only -> diagonal.
    assert positional_relation((30, 30, 40, 40), B) == "to the top left of"
    assert positional_relation((60, 30, 70, 40), B) == "to the top right of"
    assert positional_relation((30, 60, 40, 70), B) == "to the bottom left of"
    assert positional_relation((60, 60, 70, 70), B) == "to the bottom right of"


def test_one_pixel_overlap_is_overlap() -> None:
    assert positional_relation((30, 45, 41, 55), B) == "overlapping with"
    assert positional_relation((59, 59, 70, 70), B) == "overlapping with"


def test_degenerate_box_rejected() -> None:
    with pytest.raises(ValueError):
        positional_relation((5, 5, 5, 10), B)
    with pytest.raises(ValueError):
        positional_relation(B, (0, 0, 10))


def test_relations_tuple_and_inverse_table() -> None:
    assert len(RELATIONS) == len(set(RELATIONS)) == 10
    for phrase in RELATIONS:
        assert inverse_relation(inverse_relation(phrase)) == phrase
    assert inverse_relation("to the left of") == "to the right of"
    assert inverse_relation("above") == "below"
    assert inverse_relation("to the top left of") == "to the bottom right of"
    assert inverse_relation("to the top right of") == "to the bottom left of"
    assert inverse_relation("the same as") == "the same as"
    assert inverse_relation("overlapping with") == "overlapping with"
    with pytest.raises(ValueError):
        inverse_relation("near")


def test_inverse_symmetry_on_random_boxes() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(2000):
        x0, y0, x2, y2 = (int(v) for v in rng.integers(0, 50, size=4))
        a = (x0, y0, x0 + int(rng.integers(1, 20)), y0 + int(rng.integers(1, 20)))
        b = (x2, y2, x2 + int(rng.integers(1, 20)), y2 + int(rng.integers(1, 20)))
        ab, ba = positional_relation(a, b), positional_relation(b, a)
        assert ab in RELATIONS
        assert ab == inverse_relation(ba)
        seen.add(ab)
    assert seen == set(RELATIONS) - {"the same as"}
