"""Positional conversations (RefCOCO/+/g, LVIS).

Rules (SegLLM appendix): 2-18 annotations of one image, one round each, in random order. For
RefCOCO/+/g an annotation is one referring expression, so an object with several expressions
can be asked about several times; for LVIS it is one instance. Round 1 queries its object
directly; every later round queries its object itself with probability ``self_query_prob``
(1/3), otherwise relates it to a random earlier round's output: "the <class> <relation> <name
of round k>", the relation from :func:`segllm_training.relations.positional_relation` on the
two boxes (edges and centres, overlap from ``overlap_min``), "the same as" when both rounds'
expressions refer to one object (RefCOCO only: LVIS has one annotation per instance).
LVIS uses only classes with one or two instances in the image (its reader drops the COCO
classes); with two, a location word ("on the left", "at the top") tells them apart.
A relational round that several instances of the class satisfy is ambiguous
(:mod:`.ambiguity`); ``cfg.ambiguous`` keeps it, turns it into a self query ("drop") or makes
every candidate a target ("multi"; later rounds then relate only to single-target rounds).
``tally`` counts relational and ambiguous rounds for the build report.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from segllm_ros.engine.answers import ONE

from ...relations import positional_relation
from ..config import BuildConfig
from ..entries import ImageEntry, Instance
from ..schema import ConversationRecord, RoundRecord
from .ambiguity import AMBIGUOUS_ROUNDS, POSITIONAL_ROUNDS, Matcher, multi_round
from .common import Target, definite, record, ref_name, round_for, sample_some, targets


def _location_captions(pair: list[Instance]) -> list[str]:
    """Captions for two same-class instances, along the axis their centres differ most."""
    (a, b) = pair
    cx = [(i.bbox[0] + i.bbox[2]) / 2 for i in pair]
    cy = [(i.bbox[1] + i.bbox[3]) / 2 for i in pair]
    if abs(cx[0] - cx[1]) >= abs(cy[0] - cy[1]):
        words = (
            ("on the left", "on the right") if cx[0] <= cx[1] else ("on the right", "on the left")
        )
    else:
        words = (
            ("at the top", "at the bottom") if cy[0] <= cy[1] else ("at the bottom", "at the top")
        )
    return [f"{a.category} {words[0]}", f"{b.category} {words[1]}"]


def lvis_candidates(entry: ImageEntry) -> set:
    """Annotation ids LVIS may use; sets the location captions of the two-instance classes."""
    by_class: dict[str, list[Instance]] = defaultdict(list)
    for inst in entry.instances:
        by_class[inst.category].append(inst)
    keep = set()
    for insts in by_class.values():
        if len(insts) > 2:
            continue
        if len(insts) == 2:
            for inst, caption in zip(insts, _location_captions(insts), strict=True):
                inst.captions = [caption]
        keep.update(i.ann_id for i in insts)
    return keep


def annotations(entry: ImageEntry, cfg: BuildConfig, source: str) -> list[tuple[Target, str]]:
    """The (target, caption) pairs a conversation samples from: one per referring expression
    (RefCOCO/+/g), one per usable instance (LVIS)."""
    if source == "lvis":
        allowed = lvis_candidates(entry)
        return [
            (t, t.inst.captions[0] if t.inst.captions else t.inst.category)
            for t in targets(entry, cfg, lambda i: i.ann_id in allowed)
        ]
    return [
        (t, expression)
        for t in targets(entry, cfg, lambda i: bool(i.captions))
        for expression in t.inst.captions
    ]


def positional(
    entry: ImageEntry,
    rng: np.random.Generator,
    cfg: BuildConfig,
    source: str,
    tally: Counter[str] | None = None,
) -> list[ConversationRecord]:
    tally = tally if tally is not None else Counter()
    cands = annotations(entry, cfg, source)
    if len(cands) < cfg.positional_min:
        return []
    chosen = sample_some(rng, cands, cfg.positional_min, cfg.positional_max)
    matcher = Matcher(entry, cfg, [target for target, _ in cands])
    rounds: list[RoundRecord] = []
    for t, (target, caption) in enumerate(chosen):
        if t == 0 or rng.random() < cfg.self_query_prob:
            rounds.append(round_for(target, definite(caption), caption))
            continue
        singles = [i for i, rnd in enumerate(rounds, start=1) if rnd.kind == ONE]
        k = singles[int(rng.integers(len(singles)))]
        earlier, earlier_caption = chosen[k - 1]
        relation = positional_relation(
            target.box,
            earlier.box,
            same_instance=target.inst.ann_id == earlier.inst.ann_id,
            min_overlap=cfg.overlap_min,
        )
        fits = matcher.matches(target, earlier, relation)
        tally[POSITIONAL_ROUNDS] += 1
        tally[AMBIGUOUS_ROUNDS] += len(fits) > 1
        if len(fits) > 1 and cfg.ambiguous == "drop":
            rounds.append(round_for(target, definite(caption), caption))
            continue
        query = f"the {target.inst.category} {relation} {ref_name(k, earlier_caption, rng, cfg)}"
        if len(fits) > 1 and cfg.ambiguous == "multi":
            rounds.append(multi_round(fits, query, [k]))
        else:
            rounds.append(round_for(target, query, caption, [k]))
    return [record(source, entry, 0, rounds)]
