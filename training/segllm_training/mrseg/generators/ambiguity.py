"""Ambiguity of positional rounds: how many objects "the <class> <relation> <ref>" fits.

Why: the seed trains every round on exactly one mask, so when two cups are to the left of the
reference, a relational query about one of them teaches the model to guess. Counting the
instances of the target's class that stand in the same relation to the reference measures how
often that happens (every build reports it) and lets a build drop such rounds or keep every
candidate (``BuildConfig.ambiguous``).
"""

from __future__ import annotations

from pycocotools import mask as mask_utils

from segllm_ros.engine.answers import AMBIGUOUS, reading_order

from ...relations import SAME, positional_relation
from ..config import BuildConfig
from ..entries import ImageEntry, Instance
from ..schema import RoundRecord
from .common import Target, instance_rle, rle_area

POSITIONAL_ROUNDS = "positional_rounds"
"""Tally key: rounds that relate their target to an earlier round's ("the same as" included)."""
AMBIGUOUS_ROUNDS = "ambiguous_rounds"
"""Tally key: those of them that more than one instance satisfies."""


def _centre(inst: Instance) -> tuple[float, float]:
    x0, y0, x1, y1 = inst.bbox
    return (x0 + x1) / 2, (y0 + y1) / 2


class Matcher:
    """The instances of an image that a relational query fits; each instance's mask is made
    once, and only for instances of a queried class that stand in the queried relation."""

    def __init__(self, entry: ImageEntry, cfg: BuildConfig, known: list[Target]) -> None:
        self._entry, self._cfg = entry, cfg
        self._targets: dict[object, Target | None] = {t.inst.ann_id: t for t in known}

    def _target(self, inst: Instance) -> Target | None:
        """The instance as a target; None when it is too small to be one (``min_area``)."""
        if inst.ann_id not in self._targets:
            rle = instance_rle(inst, self._entry)
            self._targets[inst.ann_id] = (
                Target(inst, rle) if rle_area(rle) >= self._cfg.min_area else None
            )
        return self._targets[inst.ann_id]

    def matches(self, target: Target, reference: Target, relation: str) -> list[Target]:
        """Instances of ``target``'s class, other than ``reference``, that are ``relation``
        ``reference``, in reading order (``target`` among them); "the same as" fits one."""
        if relation == SAME:
            return [target]
        found = []
        for inst in self._entry.instances:
            if inst.category != target.inst.category or inst.ann_id == reference.inst.ann_id:
                continue
            cand = self._target(inst)
            if cand is not None and relation == positional_relation(
                cand.box, reference.box, min_overlap=self._cfg.overlap_min
            ):
                found.append(cand)
        return [found[i] for i in reading_order([_centre(t.inst) for t in found])]


def multi_round(fits: list[Target], query: str, refs: list[int]) -> RoundRecord:
    """An ambiguous round with every candidate as a target: ``targets`` in reading order,
    ``mask`` their union (a derived mask: no annotation id), the class name as caption."""
    rles = [{"size": t.rle["size"], "counts": t.rle["counts"].encode("ascii")} for t in fits]
    union = mask_utils.merge(rles, intersect=False)
    return RoundRecord(
        query=query,
        mask={"size": [int(s) for s in union["size"]], "counts": union["counts"].decode("ascii")},
        ref_rounds=refs,
        caption=fits[0].inst.category,
        annotation_id=None,
        kind=AMBIGUOUS,
        targets=[t.rle for t in fits],
    )
