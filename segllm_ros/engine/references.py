"""Which earlier rounds a multi-round query refers to.

SegLLM conditions each round on the masks of earlier rounds. The operator names them either
with explicit tokens (``<the output of round 2>``, ``<instance 2>``), with the request's
``ref_rounds`` field, or implicitly ("the cup next to *it*", "the *other* chair"), which
means the previous round. Resolving and validating that here, before any inference, lets the
node reject a bad reference with a message the operator can act on instead of segmenting
the wrong thing.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence

__all__ = [
    "DEFAULT_MAX_REFS",
    "REFERENCE_FORMS",
    "BadReferenceError",
    "describe_rounds",
    "format_reference",
    "parse_references",
    "pronoun_reference",
    "resolve_references",
    "rewrite_references",
    "uses_pronoun_reference",
]

#: How many earlier rounds one query may condition on (SegLLM is trained with few).
DEFAULT_MAX_REFS = 4

#: The two explicit ways to name an earlier round's output: one definition for the parser
#: below, the tabletop generator and the MRSeg generators.
REFERENCE_FORMS = {"output": "<the output of round {k}>", "instance": "<instance {k}>"}

# The forms above, any case, any amount of whitespace, and the authors' ``[REF:k]`` (their
# released model's CLI); a signed number so that "round -1" is reported as a bad reference
# instead of passing as plain text.
_ROUND_TOKEN = re.compile(
    r"<\s*(?:the\s+output\s+of\s+round|instance)\s+([-+]?\d+)\s*>"
    r"|\[\s*REF\s*:\s*([-+]?\d+)\s*\]",
    re.IGNORECASE,
)
# Any angle-bracket token: its words ("it", "that", ...) are not pronouns.
_ANY_TOKEN = re.compile(r"<[^<>]*>")
# "that" followed by one of these is a relative clause ("the mug that is red"), not a
# reference to the previous round.
_RELATIVE_VERBS = r"(?:is|are|was|were|has|have|had|'s)"
_PRONOUN = re.compile(
    r"\b(?P<word>it|its|the\s+other|again)\b"
    rf"|\b(?P<that>that)\b(?!\s*{_RELATIVE_VERBS}\b)",
    re.IGNORECASE,
)


class BadReferenceError(ValueError):
    """A query refers to a round that does not exist (or to too many rounds).

    Subclasses ``ValueError`` so callers that treat any bad request the same need no change.
    """


def format_reference(k: int, form: str = "output") -> str:
    """Round ``k``'s output written in one of ``REFERENCE_FORMS`` ("output" or "instance")."""
    return REFERENCE_FORMS[form].format(k=k)


def parse_references(text: str) -> list[int]:
    """Round numbers (1-based) named by explicit tokens, in order of first appearance.

    Numbers are returned as written (even 0); validation is ``resolve_references``' job so it
    can explain what is wrong.
    """
    seen: dict[int, None] = {}
    for match in _ROUND_TOKEN.finditer(text):
        seen.setdefault(int(match.group(1) or match.group(2)), None)
    return list(seen)


def rewrite_references(text: str, rewrite: Callable[[int, str], str]) -> str:
    """``text`` with every explicit reference token replaced by ``rewrite(k, token)``: how a
    model family writes references in its own prompt format (same tokens as
    ``parse_references`` reads)."""
    return _ROUND_TOKEN.sub(lambda m: rewrite(int(m.group(1) or m.group(2)), m.group(0)), text)


def pronoun_reference(text: str) -> str | None:
    """The first implicit reference word in ``text`` ("it", "that", "the other", "again").

    ``None`` when there is none, or when the text also names a round explicitly: then the
    pronoun means that round and adds nothing.
    """
    if _ROUND_TOKEN.search(text):
        return None
    match = _PRONOUN.search(_ANY_TOKEN.sub(" ", text))
    if match is None:
        return None
    return " ".join(match.group(0).lower().split())


def uses_pronoun_reference(text: str) -> bool:
    """Whether ``text`` refers to the previous round implicitly (see ``pronoun_reference``)."""
    return pronoun_reference(text) is not None


def describe_rounds(count: int) -> str:
    """``"2 earlier rounds"`` / ``"1 earlier round"``: shared wording of error messages."""
    return f"{count} earlier round" + ("" if count == 1 else "s")


def _as_round_number(value: object) -> int:
    """Accept ints (and numpy integers), reject bools/floats/strings with a clear message."""
    if isinstance(value, bool):
        raise BadReferenceError(f"round number must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise BadReferenceError(f"round number must be an integer, got {value!r}") from None


def resolve_references(
    text: str,
    explicit: Sequence[int],
    num_previous_rounds: int,
    max_refs: int = DEFAULT_MAX_REFS,
) -> list[int]:
    """The earlier rounds (1-based) a query conditions on, validated.

    Explicit ``ref_rounds`` come first, then tokens in the text, without duplicates. With
    neither, an implicit reference ("it", "the other", ...) means the previous round.
    Raises ``BadReferenceError`` naming the offending round, so the operator can fix the
    query rather than get a mask for the wrong object.
    """
    if num_previous_rounds < 0:
        raise ValueError(f"num_previous_rounds must be >= 0, got {num_previous_rounds}")
    rounds: dict[int, None] = {}
    for value in explicit:
        rounds.setdefault(_as_round_number(value), None)
    for value in parse_references(text):
        rounds.setdefault(value, None)

    if not rounds:
        word = pronoun_reference(text)
        if word is None:
            return []
        if num_previous_rounds == 0:
            raise BadReferenceError(
                f"'{word}' refers to the previous round, "
                "but this is the first round of the conversation"
            )
        return [num_previous_rounds]

    for number in rounds:
        if number < 1:
            raise BadReferenceError(f"round {number} does not exist: rounds are numbered from 1")
        if number > num_previous_rounds:
            if num_previous_rounds == 0:
                raise BadReferenceError(
                    f"round {number} does not exist: this is the first round of the conversation"
                )
            raise BadReferenceError(
                f"round {number} does not exist: "
                f"this conversation has {describe_rounds(num_previous_rounds)}"
            )
    if len(rounds) > max_refs:
        raise BadReferenceError(
            f"too many referenced rounds ({len(rounds)}): "
            f"a query may refer to at most {max_refs} earlier rounds"
        )
    return list(rounds)
