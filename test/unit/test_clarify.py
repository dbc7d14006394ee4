"""The clarifying question of an AMBIGUOUS answer and the reading of the operator's reply."""

from __future__ import annotations

import pytest

from segllm_ros.engine.clarify import (
    candidate_positions,
    clarifying_question,
    format_candidate,
    resolve_clarification,
)
from segllm_ros.engine.references import BadReferenceError

# Boxes (x0, y0, x1, y1) in reading order, as an AMBIGUOUS answer gives them.
SIDE_BY_SIDE = [(10, 40, 30, 60), (80, 44, 100, 64)]
ROW_OF_3 = [(10, 40, 30, 60), (50, 38, 70, 58), (90, 42, 110, 62)]
ROW_OF_5 = [(i * 30, 0, i * 30 + 20, 20) for i in range(5)]
STACKED = [(10, 70, 30, 90), (14, 5, 34, 25)]  # same column: the second is on top
OVERLAPPING = [(10, 10, 30, 30), (13, 12, 33, 32)]  # no side of one is visibly apart
GRID_2X2 = [(0, 0, 20, 20), (0, 50, 20, 70), (50, 0, 70, 20), (50, 50, 70, 70)]


def test_two_side_by_side_are_left_and_right() -> None:
    assert candidate_positions(SIDE_BY_SIDE) == ["on the left", "on the right"]


def test_a_row_of_three_has_a_middle() -> None:
    assert candidate_positions(ROW_OF_3) == ["on the left", "in the middle", "on the right"]


def test_a_row_of_five_counts_from_both_ends() -> None:
    assert candidate_positions(ROW_OF_5) == [
        "on the far left",
        "second from the left",
        "in the middle",
        "second from the right",
        "on the far right",
    ]


def test_a_column_uses_top_and_bottom_in_the_given_order() -> None:
    # Reading order puts the lower one first here (it is slightly further left).
    assert candidate_positions(STACKED) == ["at the bottom", "at the top"]


def test_the_axis_of_the_larger_spread_wins() -> None:
    # Apart on both axes, further apart vertically.
    diagonal = [(0, 0, 10, 10), (20, 80, 30, 90)]
    assert candidate_positions(diagonal) == ["at the top", "at the bottom"]
    wide = [(0, 0, 10, 10), (80, 20, 90, 30)]
    assert candidate_positions(wide) == ["on the left", "on the right"]


def test_numbers_when_no_words_tell_them_apart() -> None:
    assert candidate_positions(OVERLAPPING) == ["number 1", "number 2"]
    assert candidate_positions(GRID_2X2) == ["number 1", "number 2", "number 3", "number 4"]


@pytest.mark.parametrize("boxes", [SIDE_BY_SIDE, ROW_OF_3, ROW_OF_5, STACKED, GRID_2X2])
def test_positions_are_distinct(boxes) -> None:
    positions = candidate_positions(boxes)
    assert len(positions) == len(boxes) == len(set(positions))


def test_question_lists_numbered_positions() -> None:
    assert clarifying_question("the red circle", SIDE_BY_SIDE) == (
        "2 objects match 'the red circle': 1 on the left, 2 on the right. Which one?"
    )
    assert clarifying_question(" the cross. ", ROW_OF_3) == (
        "3 objects match 'the cross': 1 on the left, 2 in the middle, 3 on the right. Which one?"
    )


def test_question_falls_back_to_numbers() -> None:
    assert clarifying_question("the mug", OVERLAPPING) == (
        "2 objects match 'the mug', numbered 1 and 2 from left to right. Which one?"
    )
    assert "numbered 1 to 4" in clarifying_question("the mug", GRID_2X2)


def test_question_needs_two_candidates() -> None:
    with pytest.raises(ValueError, match="at least 2 candidates"):
        clarifying_question("the mug", [(0, 0, 5, 5)])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("the left one", 0),
        ("the one on the left", 0),
        ("left", 0),
        ("The Left one.", 0),
        ("on the far left", 0),
        ("the leftmost one", 0),
        ("the rightmost one", 1),
        ("the right one please", 1),
        ("the first", 0),
        ("the first one", 0),
        ("the second one", 1),
        ("the 2nd one", 1),
        ("the last one", 1),
        ("second from the right", 0),
        ("number 2", 1),
        ("#1", 0),
        ("2", 1),
        ("candidate 1", 0),
        (format_candidate(2), 1),
        ("< Candidate 2 >", 1),
        ("I mean the one on the right", 1),
        ("take the first", 0),
    ],
)
def test_reply_chooses_a_candidate(reply: str, expected: int) -> None:
    assert resolve_clarification(reply, SIDE_BY_SIDE) == expected


def test_positions_resolve_on_the_axis_they_name() -> None:
    assert resolve_clarification("the top one", STACKED) == 1
    assert resolve_clarification("the one at the bottom", STACKED) == 0
    assert resolve_clarification("the lower one", STACKED) == 0
    assert resolve_clarification("the middle one", ROW_OF_3) == 1
    assert resolve_clarification("the one in the middle", ROW_OF_3) == 1
    assert resolve_clarification("second from the left", ROW_OF_5) == 1
    assert resolve_clarification("the 4th one from the left", ROW_OF_5) == 3


def test_every_phrase_of_the_question_answers_it() -> None:
    for boxes in (SIDE_BY_SIDE, ROW_OF_3, ROW_OF_5, STACKED, GRID_2X2):
        for index, phrase in enumerate(candidate_positions(boxes)):
            assert resolve_clarification(f"the one {phrase}", boxes) == index, phrase


@pytest.mark.parametrize(
    "reply",
    ["the red cross", "the other one", "the cup left of the second one", "", "left of it"],
)
def test_other_text_is_a_new_query(reply: str) -> None:
    assert resolve_clarification(reply, SIDE_BY_SIDE) is None


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        ("<candidate 5>", "candidate 5 does not exist: 2 objects matched, numbered 1 to 2"),
        ("number 0", "candidate 0 does not exist"),
        ("-1", "candidate -1 does not exist"),
        ("the third one", "candidate 3 does not exist"),
        ("third from the left", "there are only 2 candidates"),
        ("the middle one", "none of the 2 candidates is in the middle"),
        # Side by side at the same height: "top" does not single one out.
        ("the top one", "does not tell candidates 1 and 2 apart"),
    ],
)
def test_bad_choice_is_reported(reply: str, words: str) -> None:
    with pytest.raises(BadReferenceError, match=words):
        resolve_clarification(reply, SIDE_BY_SIDE)


def test_positions_that_do_not_separate_are_reported() -> None:
    with pytest.raises(BadReferenceError, match="answer with a number from 1 to 2"):
        resolve_clarification("the left one", OVERLAPPING)
    assert resolve_clarification("number 2", OVERLAPPING) == 1
