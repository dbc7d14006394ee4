"""What every reader produces: images with their annotated objects, in one common shape.

Why a common shape: the generators (positional, hierarchical, ...) state rules over objects,
boxes and captions, not over file formats; readers translate each real format into
:class:`ImageEntry` once and validate it on the way, so a generator never sees a broken record.
Entries are plain picklable data: a build ships them to worker processes, where masks are
decoded (polygons and RLE through pycocotools, label maps through NumPy) only when needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


class SourceError(ValueError):
    """Corrupt or missing input; the message names the file and, where known, the record."""

    def __init__(self, path: str | Path, message: str, record: Any = None) -> None:
        where = f"{path}" + (f" [{record}]" if record is not None else "")
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.record = record


@dataclass
class Instance:
    """One annotated object (or part). ``bbox`` is ``(x0, y0, x1, y1)`` in pixels."""

    ann_id: int | str
    category: str
    bbox: tuple[float, float, float, float]
    segmentation: Any = None
    """COCO polygons (list of flat lists) or RLE (dict); None when the mask comes otherwise."""
    captions: list[str] = field(default_factory=list)
    parent: int | str | None = None
    """For a part: the ``ann_id`` of its object."""

    def caption(self, rng: np.random.Generator) -> str:
        """A referring expression when the source has some, else the class name."""
        if self.captions:
            return self.captions[int(rng.integers(len(self.captions)))]
        return self.category


@dataclass
class Relationship:
    """Visual Genome: ``subject`` --predicate--> ``object`` (indices into ``instances``)."""

    rel_id: int | str
    subject: int
    predicate: str
    object: int


@dataclass
class ImageEntry:
    image_id: int | str
    file_name: str
    """Image path relative to the dataset's image root."""
    height: int
    width: int
    split: str
    instances: list[Instance] = field(default_factory=list)
    relationships: list[Relationship] = field(default_factory=list)
    label_file: str | None = None
    """Semantic/panoptic label map (absolute path), read in the worker."""
    classes: dict[int, str] = field(default_factory=dict)
    """Label value -> class name, for label maps."""
    texts: list[str] = field(default_factory=list)
    is_sentence: bool = False
    image_file: str | None = None
    """Absolute image path, for sources that need the pixels (SAM, GPT crops)."""
    source_file: str = ""
    """The annotation file this entry came from (for error messages)."""


def xywh_to_xyxy(bbox: Any, path: str | Path, record: Any) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` -> ``(x0, y0, x1, y1)``; rejects malformed or empty boxes."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise SourceError(path, f"bbox must be [x, y, w, h], got {bbox!r}", record)
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise SourceError(path, f"bbox has non-numbers: {bbox!r}", record) from None
    if w <= 0 or h <= 0:
        raise SourceError(path, f"bbox has no area: {bbox!r}", record)
    return x, y, x + w, y + h


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO polygons, uncompressed or compressed RLE -> bool HxW (pycocotools)."""
    if isinstance(segmentation, list):
        if not segmentation or any(len(p) < 6 or len(p) % 2 for p in segmentation):
            raise ValueError("polygons need at least 3 (x, y) points each")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        counts = segmentation["counts"]
        rle = {
            "size": segmentation["size"],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
        }
        if list(rle["size"]) != [height, width]:
            raise ValueError(f"RLE size {rle['size']} != image {[height, width]}")
    else:
        raise ValueError(f"unknown segmentation {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(bool)


def load_json(path: Path) -> Any:
    """JSON with errors that name the file (and the line/column of a truncation)."""
    if not path.is_file():
        raise SourceError(path, "file not found")
    try:
        with path.open() as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise SourceError(path, f"corrupt or truncated JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SourceError(path, f"not a text file: {exc}") from None


def require(record: Any, keys: tuple[str, ...], path: Path, where: Any) -> None:
    """Raise naming the record when a dict lacks required keys."""
    if not isinstance(record, dict):
        raise SourceError(path, f"expected an object, got {type(record).__name__}", where)
    missing = [k for k in keys if k not in record]
    if missing:
        raise SourceError(path, f"missing field(s) {missing}", where)


class BadRecords:
    """Collects skipped records when ``--skip-bad`` is on; raises at once otherwise."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.errors: list[str] = []

    def report(self, error: SourceError) -> None:
        if not self.skip_bad:
            raise error
        self.errors.append(str(error))


def load_image(path: str | Path) -> np.ndarray:
    """RGB uint8 HxWx3; a missing or corrupt image names the file."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise SourceError(path, "image not found") from None
    except OSError as exc:
        raise SourceError(path, f"corrupt image: {exc}") from None
