"""Hierarchical conversations (PACO-LVIS, Pascal Panoptic Parts): an object, then its parts.

Rules: 1-4 instances that have parts, and for each 1-4 of its parts; the instance's round
("the mug") is followed by one round per part naming it ("the handle of <instance 1>"), the
instance named as any earlier output (caption with probability 0.5). Pascal's parts are taken
per instance (pixels of that instance's uid with the part id), never from semantic-only regions.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from ..config import BuildConfig
from ..entries import ImageEntry
from ..schema import ConversationRecord, RoundRecord
from .common import Target, definite, record, ref_name, round_for, sample_some, targets


def hierarchical(
    entry: ImageEntry,
    rng: np.random.Generator,
    cfg: BuildConfig,
    source: str,
    tally: Counter[str],
) -> list[ConversationRecord]:
    usable = targets(entry, cfg)
    parts: dict[object, list[Target]] = defaultdict(list)
    for t in usable:
        if t.inst.parent is not None:
            parts[t.inst.parent].append(t)
    objects = [t for t in usable if t.inst.parent is None and parts.get(t.inst.ann_id)]
    if not objects:
        return []
    rounds: list[RoundRecord] = []
    for obj in sample_some(rng, objects, 1, cfg.hierarchical_max_instances):
        caption = obj.inst.caption(rng)
        rounds.append(round_for(obj, definite(caption), caption))
        k = len(rounds)
        for part in sample_some(rng, parts[obj.inst.ann_id], 1, cfg.hierarchical_max_parts):
            query = f"the {part.inst.category} of {ref_name(k, caption, rng, cfg)}"
            rounds.append(round_for(part, query, f"{part.inst.category} of the {caption}", [k]))
    return [record(source, entry, 0, rounds)]
