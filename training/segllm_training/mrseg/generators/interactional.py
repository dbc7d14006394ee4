"""Interactional conversations (Visual Genome): subject, then object through the relationship.

Rules: up to 4 relationships of an image, each its own 2-round conversation: round 1 "the
<subject>", round 2 "the <object> that <name of round 1> is <predicate>". Visual Genome has
boxes only; the masks come from a box-prompted SAM (:func:`..sam_boxes.box_segmenter`), run
in the worker process that owns the image.
"""

from __future__ import annotations

import numpy as np

from ..config import BuildConfig
from ..entries import ImageEntry, Instance
from ..schema import ConversationRecord, RoundRecord, encode_mask
from .common import definite, int_box, record, ref_name, sample

BE_PREDICATES = frozenset(
    [
        "on",
        "in",
        "at",
        "near",
        "behind",
        "under",
        "above",
        "below",
        "beside",
        "by",
        "with",
        "of",
        "next",
        "inside",
        "over",
        "along",
        "against",
        "across",
        "around",
        "between",
        "beneath",
        "outside",
        "from",
        "to",
    ]
)
"""First words after which the predicate needs "is" ("the table that the cup is on")."""


def relation_phrase(predicate: str) -> str:
    first = predicate.split(" ", 1)[0]
    return f"is {predicate}" if first in BE_PREDICATES or first.endswith("ing") else predicate


def interactional(
    entry: ImageEntry, rng: np.random.Generator, cfg: BuildConfig, source: str, segment=None
) -> list[ConversationRecord]:
    """``segment(entry, boxes) -> list of bool masks``: the box-prompted SAM."""
    if not entry.relationships:
        return []
    chosen = sample(rng, entry.relationships, cfg.interactional_max_relationships)
    used = sorted({i for rel in chosen for i in (rel.subject, rel.object)})
    masks = segment(entry, [int_box(entry.instances[i].bbox) for i in used])
    rle = {i: encode_mask(m) for i, m in zip(used, masks, strict=True)}
    records = []
    for c, rel in enumerate(chosen):
        subj: Instance = entry.instances[rel.subject]
        obj: Instance = entry.instances[rel.object]
        first = RoundRecord(
            query=definite(subj.category),
            mask=rle[rel.subject],
            caption=subj.category,
            annotation_id=subj.ann_id,
        )
        query = (
            f"the {obj.category} that {ref_name(1, subj.category, rng, cfg)} "
            f"{relation_phrase(rel.predicate)}"
        )
        second = RoundRecord(
            query=query,
            mask=rle[rel.object],
            ref_rounds=[1],
            caption=obj.category,
            annotation_id=obj.ann_id,
        )
        records.append(record(source, entry, c, [first, second]))
    return records
