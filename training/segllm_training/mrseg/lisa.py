"""The LISA comparison conversions: MRSeg conversations for a model with no reference input.

LISA has no way to take an earlier mask as input, so SegLLM's appendix compares against LISA
trained on the same conversations with every reference turned into text:

- Approach 1: each reference token (``<the output of round k>``, ``<instance k>``) becomes
  "the mask";
- Approach 2: it becomes round k's caption (the description of the referenced object).

Both drop ``ref_rounds``, so nothing but text reaches the model. References already written
as text (a caption, "it", "the other ...") stay as they are: they are what LISA reads anyway.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from segllm_training.mrseg.schema import ConversationRecord

# The MRSeg reference tokens, as the engine parses them.
_REFERENCE = re.compile(r"<\s*(?:the\s+output\s+of\s+round|instance)\s+(\d+)\s*>", re.IGNORECASE)

APPROACHES = ("approach1", "approach2")


def _convert(record: ConversationRecord, text_for: Callable[[int], str]) -> ConversationRecord:
    rounds = []
    for rnd in record.rounds:
        query = _REFERENCE.sub(lambda m: text_for(int(m.group(1))), rnd.query)
        rounds.append(dataclasses.replace(rnd, query=" ".join(query.split()), ref_rounds=[]))
    return dataclasses.replace(record, rounds=rounds)


def approach1(record: ConversationRecord) -> ConversationRecord:
    """Every reference token -> "the mask"; no reference input."""
    return _convert(record, lambda k: "the mask")


def approach2(record: ConversationRecord) -> ConversationRecord:
    """Every reference token -> the referenced round's caption ("the <caption>"); no
    reference input. A round without a caption falls back to Approach 1's "the mask"."""

    def caption(k: int) -> str:
        text = record.rounds[k - 1].caption.strip() if 1 <= k <= len(record.rounds) else ""
        if not text:
            return "the mask"
        return text if text.lower().startswith("the ") else f"the {text}"

    return _convert(record, caption)


def convert(record: ConversationRecord, approach: str | None) -> ConversationRecord:
    """``approach`` one of :data:`APPROACHES`, or None for the record unchanged."""
    if approach is None:
        return record
    if approach not in APPROACHES:
        raise ValueError(f"unknown LISA conversion {approach!r}; one of {APPROACHES}")
    return approach1(record) if approach == "approach1" else approach2(record)


__all__ = ["APPROACHES", "approach1", "approach2", "convert"]
