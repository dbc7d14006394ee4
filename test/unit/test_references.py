"""Which earlier rounds a query refers to: parsing and validation."""

from __future__ import annotations

import numpy as np
import pytest

from segllm_ros.engine.history import ConversationFullError
from segllm_ros.engine.references import (
    REFERENCE_FORMS,
    BadReferenceError,
    format_reference,
    parse_references,
    pronoun_reference,
    resolve_references,
    uses_pronoun_reference,
)


def test_parse_all_token_forms_in_order() -> None:
    text = "the mug left of <the output of round 3> and the lid of <instance 1>"
    assert parse_references(text) == [3, 1]


def test_parse_case_spaces_and_dedupe() -> None:
    text = "< The  Output of   ROUND 2 >, <INSTANCE   2>, <instance 4 >, <the output of round 2>"
    assert parse_references(text) == [2, 4]
    assert parse_references("<the output\tof\nround 12>") == [12]


def test_parse_ignores_plain_text_and_keeps_zero() -> None:
    assert parse_references("round 2 and instance 3 without brackets") == []
    assert parse_references("") == []
    # Zero is parsed so that resolution can explain it.
    assert parse_references("<instance 0>") == [0]


def test_negative_round_is_a_bad_reference_not_text() -> None:
    assert parse_references("the cup left of <the output of round -1>") == [-1]
    with pytest.raises(BadReferenceError, match="round -1 does not exist"):
        resolve_references("the cup left of <the output of round -1>", [], 2)


def test_reference_forms_round_trip_through_the_parser() -> None:
    for form in REFERENCE_FORMS:
        assert parse_references(f"the lid of {format_reference(7, form)}") == [7]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the cup next to it", True),
        ("segment it", True),
        ("It again please", True),
        ("the handle of that", True),
        ("that one", True),
        ("the other chair", True),
        ("The  Other chair", True),
        ("the handle of its lid", True),
        ("segment the mug again", True),
        ("the mug that is on the table", False),
        ("the chairs that are red", False),
        ("the robot that has wheels", False),
        ("the box that was opened", False),
        ("the mug that's blue", False),
        ("a red chair", False),
        ("the item on the table", False),  # "it" inside a word
        ("another chair", False),
        ("<the output of round 2> again", False),  # explicit, not a pronoun
        ("the cup next to <instance 1>, and it", False),
        ("", False),
    ],
)
def test_uses_pronoun_reference(text: str, expected: bool) -> None:
    assert uses_pronoun_reference(text) is expected


def test_pronoun_inside_a_token_does_not_count() -> None:
    assert not uses_pronoun_reference("find <it> on the table")
    assert not uses_pronoun_reference("<that is it>")
    assert pronoun_reference("the cup next to IT") == "it"
    assert pronoun_reference("the  other chair") == "the other"


# --------------------------------------------------------------------------- resolution


def test_resolve_union_explicit_first_then_text() -> None:
    text = "the mug between <instance 3> and <the output of round 1>"
    assert resolve_references(text, [2, 3], 4) == [2, 3, 1]
    assert resolve_references("a chair", [], 3) == []
    assert resolve_references("a chair", (np.int64(2),), 3) == [2]


def test_resolve_pronoun_means_previous_round() -> None:
    assert resolve_references("the cup next to it", [], 3) == [3]
    assert resolve_references("the other chair", [], 1) == [1]
    # Explicit references win: the pronoun adds nothing.
    assert resolve_references("the cup next to it", [1], 3) == [1]
    assert resolve_references("<the output of round 2> again", [], 3) == [2]


def test_resolve_round_that_does_not_exist() -> None:
    with pytest.raises(BadReferenceError) as err:
        resolve_references("the mug left of <the output of round 5>", [], 2)
    assert str(err.value) == "round 5 does not exist: this conversation has 2 earlier rounds"
    with pytest.raises(BadReferenceError, match=r"has 1 earlier round$"):
        resolve_references("", [2], 1)
    with pytest.raises(BadReferenceError, match="round 1 does not exist: this is the first round"):
        resolve_references("<instance 1>", [], 0)


def test_resolve_pronoun_in_first_round() -> None:
    with pytest.raises(BadReferenceError) as err:
        resolve_references("the cup next to it", [], 0)
    assert str(err.value) == (
        "'it' refers to the previous round, but this is the first round of the conversation"
    )
    with pytest.raises(BadReferenceError, match=r"^'the other' refers to the previous round"):
        resolve_references("the other chair", [], 0)


@pytest.mark.parametrize("bad", [0, -1, -7])
def test_resolve_round_zero_or_negative(bad: int) -> None:
    with pytest.raises(BadReferenceError, match=f"round {bad} does not exist: rounds are numbered"):
        resolve_references("x", [bad], 3)
    with pytest.raises(BadReferenceError, match="round 0 does not exist"):
        resolve_references("<instance 0>", [], 3)


def test_resolve_rejects_non_integers() -> None:
    with pytest.raises(BadReferenceError, match="must be an integer"):
        resolve_references("x", [1.5], 3)  # type: ignore[list-item]
    with pytest.raises(BadReferenceError, match="must be an integer"):
        resolve_references("x", [True], 3)  # type: ignore[list-item]


def test_resolve_too_many_references() -> None:
    text = "".join(f"<instance {i}>" for i in range(1, 6))
    with pytest.raises(BadReferenceError, match=r"too many referenced rounds \(5\).*at most 4"):
        resolve_references(text, [], 6)
    assert resolve_references(text, [], 6, max_refs=5) == [1, 2, 3, 4, 5]
    # Duplicates do not count twice.
    assert resolve_references("<instance 1><instance 1>", [1, 2, 2, 3, 4], 6) == [1, 2, 3, 4]


def test_bad_reference_is_a_value_error() -> None:
    assert issubclass(BadReferenceError, ValueError)
    assert issubclass(ConversationFullError, ValueError)
