"""Single-object families: MRSeg-hard, semantic (ADE20K, COCO-Stuff), reasoning (ReasonSeg)
and Attributes-COCO.

MRSeg-hard: for every class with exactly two instances X, Y in a RefCOCO image, two
single-round conversations, "[encode X] segment the other <class>" -> Y and the reverse; X is
the round's ``input_mask`` and its place in the query is ``INPUT_MASK_TOKEN``. Training uses
:data:`HARD_TRAIN_TEMPLATES` (10), validation and test :data:`HARD_EVAL_TEMPLATES` (5), so
evaluation wording is never seen in training.
Semantic: ``semantic_max_classes`` (3) classes present in the label map (fewer when fewer
are present), one single-round conversation each.
Reasoning: on train one conversation per (image, text), so every instruction is trained on;
on val/test one per image with one of its texts. A sentence is used as it is.
Attributes: 1 to ``attributes_max_instances`` COCO instances, each a single-round
conversation naming it by its GPT-4 description (the ``describe`` step).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from ..config import BuildConfig
from ..entries import ImageEntry, segmentation_to_mask
from ..schema import INPUT_MASK_TOKEN, ConversationRecord, encode_mask
from .common import Target, definite, record, round_for, sample, sample_some, targets

HARD_TRAIN_TEMPLATES: tuple[str, ...] = (
    "{x} segment the other {cls}.",
    "{x} Please segment the other {cls}.",
    "{x} Find the other {cls} in the image.",
    "{x} Where is the other {cls}?",
    "{x} Can you segment the other {cls}?",
    "{x} Show me the other {cls}.",
    "{x} Segment the {cls} that is not this one.",
    "{x} Highlight the other {cls}.",
    "{x} Which one is the other {cls}? Segment it.",
    "{x} Give me the mask of the other {cls}.",
)
HARD_EVAL_TEMPLATES: tuple[str, ...] = (
    "{x} What is the other {cls}? Please segment it.",
    "{x} Segment the remaining {cls}.",
    "{x} Outline the second {cls}, not this one.",
    "{x} Locate the other {cls} and segment it.",
    "{x} I need the other {cls}; please segment it.",
)


def hard(
    entry: ImageEntry,
    rng: np.random.Generator,
    cfg: BuildConfig,
    source: str,
    tally: Counter[str],
) -> list[ConversationRecord]:
    templates = HARD_TRAIN_TEMPLATES if entry.split == "train" else HARD_EVAL_TEMPLATES
    by_class = defaultdict(list)
    for t in targets(entry, cfg):
        by_class[t.inst.category].append(t)
    records = []
    for cls in sorted(by_class):
        pair = by_class[cls]
        if len(pair) != 2:
            continue
        for x, y in (pair, pair[::-1]):
            query = templates[int(rng.integers(len(templates)))].format(x=INPUT_MASK_TOKEN, cls=cls)
            rnd = round_for(y, query, f"other {cls}", input_mask=x.rle)
            records.append(record(source, entry, len(records), [rnd]))
    return records


def semantic(
    entry: ImageEntry,
    rng: np.random.Generator,
    cfg: BuildConfig,
    source: str,
    tally: Counter[str],
) -> list[ConversationRecord]:
    chosen = sample(rng, targets(entry, cfg), cfg.semantic_max_classes)
    return [
        record(source, entry, c, [round_for(t, definite(t.inst.category), t.inst.category)])
        for c, t in enumerate(chosen)
    ]


def reasoning(
    entry: ImageEntry,
    rng: np.random.Generator,
    cfg: BuildConfig,
    source: str,
    tally: Counter[str],
) -> list[ConversationRecord]:
    mask = np.zeros((entry.height, entry.width), bool)
    for inst in entry.instances:  # LISA's rule: union of targets minus the ignore regions
        if inst.category == "target":
            mask |= segmentation_to_mask(inst.segmentation, entry.height, entry.width)
    for inst in entry.instances:
        if inst.category == "ignore":
            mask &= ~segmentation_to_mask(inst.segmentation, entry.height, entry.width)
    if mask.sum() < cfg.min_area:
        return []
    target = Target(entry.instances[0], encode_mask(mask))
    if entry.split == "train":
        texts = entry.texts
    else:
        texts = [entry.texts[int(rng.integers(len(entry.texts)))]]
    records = []
    for c, text in enumerate(texts):
        if entry.is_sentence:
            rnd = round_for(target, text, "the target")
        else:
            rnd = round_for(target, definite(text), text)
        records.append(record(source, entry, c, [rnd]))
    return records


def attributes(
    entry: ImageEntry,
    rng: np.random.Generator,
    cfg: BuildConfig,
    source: str,
    tally: Counter[str],
) -> list[ConversationRecord]:
    cands = targets(entry, cfg, lambda i: bool(i.captions))
    if not cands:
        return []
    records = []
    for c, t in enumerate(sample_some(rng, cands, 1, cfg.attributes_max_instances)):
        caption = t.inst.caption(rng)
        records.append(record(source, entry, c, [round_for(t, definite(caption), caption)]))
    return records
