"""Pieces every generator shares: per-image randomness, naming earlier rounds, masks, records.

Why per-image seeds: a build must give the same file for a seed whatever the number of worker
processes or the order images finish in, so each image draws from its own generator seeded by
(seed, source, image id), never from a stream shared across images.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from segllm_ros.engine.references import format_reference

from ..config import BuildConfig
from ..entries import ImageEntry, Instance, segmentation_to_mask
from ..schema import ConversationRecord, RoundRecord, encode_mask


def image_rng(seed: int, source: str, image_id: object) -> np.random.Generator:
    """A generator that depends only on (seed, source, image id)."""
    digest = hashlib.sha256(f"{seed}|{source}|{image_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def definite(caption: str) -> str:
    """ "man on left" -> "the man on left"; captions that start with an article stay."""
    caption = caption.strip()
    first = caption.split(" ", 1)[0].lower()
    return caption if first in {"the", "a", "an", "this", "that"} else f"the {caption}"


def ref_name(k: int, caption: str, rng: np.random.Generator, cfg: BuildConfig) -> str:
    """How a query names round ``k``'s output: its caption with ``caption_ref_prob``,
    otherwise ``<instance k>`` or ``<the output of round k>`` with equal chance (the engine's
    ``REFERENCE_FORMS``, so the generator writes exactly what the node parses)."""
    if rng.random() < cfg.caption_ref_prob:
        return definite(caption)
    return format_reference(k, "instance" if rng.random() < 0.5 else "output")


def sample(rng: np.random.Generator, items: list, n: int) -> list:
    """``n`` of ``items`` (all when fewer) in a random order: one permutation draw."""
    return [items[int(i)] for i in rng.permutation(len(items))[:n]]


def sample_some(rng: np.random.Generator, items: list, low: int, high: int) -> list:
    """``low`` to ``high`` (at most ``len(items)``) of ``items``: the count is drawn, then
    :func:`sample`."""
    return sample(rng, items, int(rng.integers(low, min(high, len(items)) + 1)))


def int_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Float COCO box -> covering integer box with exclusive edges and positive size."""
    x0, y0 = math.floor(box[0]), math.floor(box[1])
    return x0, y0, max(math.ceil(box[2]), x0 + 1), max(math.ceil(box[3]), y0 + 1)


def instance_rle(inst: Instance, entry: ImageEntry) -> dict:
    """Target RLE at the image size (JSON-safe ``counts``), straight from polygons/RLE."""
    seg = inst.segmentation
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
        return seg
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, entry.height, entry.width))
        return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return encode_mask(segmentation_to_mask(seg, entry.height, entry.width))


def rle_area(rle: dict) -> int:
    return int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


@dataclass
class Target:
    """A candidate target: the instance and its mask as RLE, made once per image."""

    inst: Instance
    rle: dict

    @property
    def box(self) -> tuple[int, int, int, int]:
        return int_box(self.inst.bbox)


def targets(entry: ImageEntry, cfg: BuildConfig, keep=lambda inst: True) -> list[Target]:
    """Instances that pass ``keep`` and cover at least ``cfg.min_area`` pixels."""
    out = []
    for inst in entry.instances:
        if keep(inst):
            rle = instance_rle(inst, entry)
            if rle_area(rle) >= cfg.min_area:
                out.append(Target(inst, rle))
    return out


def record(
    source: str, entry: ImageEntry, index: int, rounds: list[RoundRecord]
) -> ConversationRecord:
    return ConversationRecord(
        id=f"{source}-{entry.split}-{entry.image_id}-{index}",
        source=source,
        split=entry.split,
        image=entry.file_name,
        height=entry.height,
        width=entry.width,
        rounds=rounds,
    )


def round_for(
    target: Target, query: str, caption: str, refs: list[int] | None = None, **extra
) -> RoundRecord:
    return RoundRecord(
        query=query,
        mask=target.rle,
        ref_rounds=refs or [],
        caption=caption,
        annotation_id=target.inst.ann_id,
        **extra,
    )
