"""The source registry: CLI name -> reader, worker-side decoding and generator.

Why a table: the CLI, the bench and the tests dispatch through it, so adding a dataset is one
row, and every source gets the same validation, multiprocessing and error reporting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .config import BuildConfig
from .entries import BadRecords, ImageEntry, SourceError, load_json
from .generators.hierarchical import hierarchical
from .generators.interactional import interactional
from .generators.positional import positional
from .generators.single import attributes, hard, reasoning, semantic
from .readers.coco import read_coco_instances, read_lvis, read_paco
from .readers.label_maps import (
    expand_pascal_part,
    expand_semantic,
    read_ade20k,
    read_cocostuff,
    read_pascal_part,
)
from .readers.reasonseg import read_reasonseg
from .readers.refer import read_refer
from .readers.visual_genome import read_visual_genome, visual_genome_split
from .schema import ConversationRecord

Reader = Callable[[Path, str, BadRecords], list[ImageEntry]]
Generator = Callable[
    [ImageEntry, np.random.Generator, BuildConfig, str, Counter], list[ConversationRecord]
]
"""(entry, per-image rng, config, source name, tally) -> conversations; the tally collects counts
the build reports (positional: relational and ambiguous rounds; the others count nothing)."""


def attributes_path(root: Path, split: str) -> Path:
    """Where the ``describe`` step writes the GPT-4 descriptions:
    ``{ann_id: {"description": ..., "class_name": ...}}`` (Table A2's pair)."""
    return root / f"attributes_{split}2017.json"


def read_attributes_coco(root: Path, split: str, bad: BadRecords) -> list[ImageEntry]:
    """COCO instances whose annotation has a description; needs the ``describe`` step first."""
    path = attributes_path(root, split)
    if not path.is_file():
        raise SourceError(
            path, "no attribute descriptions: run `python -m segllm_training.mrseg describe` first"
        )
    descriptions = load_json(path)
    if not isinstance(descriptions, dict):
        raise SourceError(path, "expected {annotation id: {description, class_name}}")
    entries = read_coco_instances(root, split, bad)
    for entry in entries:
        for inst in entry.instances:
            item = descriptions.get(str(inst.ann_id))
            text = item.get("description") if isinstance(item, dict) else None
            inst.captions = [text.strip()] if isinstance(text, str) and text.strip() else []
            if item is not None and not inst.captions:
                bad.report(SourceError(path, "expected {description, class_name}", inst.ann_id))
    return entries


def _interactional(
    entry: ImageEntry,
    rng: np.random.Generator,
    cfg: BuildConfig,
    source: str,
    tally: Counter[str],
) -> list[ConversationRecord]:
    from .sam_boxes import box_segmenter  # torch + SAM only for the source that needs them

    return interactional(entry, rng, cfg, source, box_segmenter(cfg))


@dataclass(frozen=True)
class Source:
    name: str
    read: Reader
    generate: Generator
    expand: Callable[[ImageEntry], ImageEntry] | None = None
    """Worker-side decoding of label maps into instances (before ``generate``)."""
    split_of: Callable[[ImageEntry, BuildConfig], str] | None = None
    """For a source without official splits: the split an image belongs to."""
    needs_sam: bool = False
    """Masks come from SAM: the build checks the checkpoint before reading anything."""


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("refcoco", partial(read_refer, dataset="refcoco"), positional),
        Source("refcoco+", partial(read_refer, dataset="refcoco+"), positional),
        Source("refcocog", partial(read_refer, dataset="refcocog"), positional),
        Source("lvis", read_lvis, positional),
        Source("paco_lvis", read_paco, hierarchical),
        Source("pascal_part", read_pascal_part, hierarchical, expand_pascal_part),
        Source(
            "visual_genome",
            read_visual_genome,
            _interactional,
            split_of=visual_genome_split,
            needs_sam=True,
        ),
        Source("mrseg_hard", partial(read_refer, dataset="mrseg_hard"), hard),
        Source("ade20k", read_ade20k, semantic, expand_semantic),
        Source("cocostuff", read_cocostuff, semantic, expand_semantic),
        Source("reasonseg", read_reasonseg, reasoning),
        Source("attributes_coco", read_attributes_coco, attributes),
    )
}
