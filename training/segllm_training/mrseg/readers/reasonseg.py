"""ReasonSeg (LISA): ``<root>/{train,val,test}/<name>.jpg`` with ``<name>.json`` beside it.

Each JSON is LabelMe-style: ``{"text": [queries...], "is_sentence": bool, "shapes": [{"label":
"target" | "ignore" | "flag", "shape_type": "polygon", "points": [[x, y], ...]}, ...]}``; the
target is the union of the ``target`` polygons minus the ``ignore`` ones (LISA's rule). The image
size comes from ``imageHeight``/``imageWidth`` when present, otherwise from the image file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..entries import BadRecords, ImageEntry, Instance, SourceError

SPLITS = ("train", "val", "test")


def _polygon(points: object, path: Path, where: str) -> list[float]:
    try:
        flat = [float(v) for p in points for v in p]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise SourceError(path, "points must be [[x, y], ...]", where) from None
    if len(flat) < 6 or len(flat) % 2:
        raise SourceError(path, "a polygon needs at least 3 points", where)
    return flat


def _box(polygons: list[list[float]]) -> tuple[float, float, float, float]:
    xs = np.concatenate([np.asarray(p[0::2]) for p in polygons])
    ys = np.concatenate([np.asarray(p[1::2]) for p in polygons])
    return float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1


def read_one(path: Path, split: str) -> ImageEntry:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"corrupt or truncated JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise SourceError(path, "expected an object with 'shapes'")
    texts = data.get("text")
    if isinstance(texts, str):
        texts = [texts]
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise SourceError(path, "'text' must be a non-empty list of strings")
    target, ignore = [], []
    for k, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict):
            raise SourceError(path, "a shape must be an object", f"shapes[{k}]")
        label = str(shape.get("label", "")).lower()
        if label == "flag":
            continue
        if shape.get("shape_type", "polygon") != "polygon":
            raise SourceError(
                path, f"unsupported shape_type {shape.get('shape_type')!r}", f"shapes[{k}]"
            )
        (ignore if "ignore" in label else target).append(
            _polygon(shape.get("points"), path, f"shapes[{k}]")
        )
    if not target:
        raise SourceError(path, "no target polygon")
    image = path.with_suffix(".jpg")
    height, width = data.get("imageHeight"), data.get("imageWidth")
    if not height or not width:
        if not image.is_file():
            raise SourceError(image, "image not found (and the JSON has no imageHeight/Width)")
        with Image.open(image) as im:
            width, height = im.size
    return ImageEntry(
        image_id=path.stem,
        file_name=f"{split}/{path.stem}.jpg",
        height=int(height),
        width=int(width),
        split=split,
        source_file=str(path),
        instances=[
            Instance(ann_id=path.stem, category="target", bbox=_box(target), segmentation=target)
        ]
        + [
            Instance(
                ann_id=f"{path.stem}-ignore{k}", category="ignore", bbox=_box([p]), segmentation=[p]
            )
            for k, p in enumerate(ignore)
        ],
        texts=[t.strip() for t in texts],
        is_sentence=bool(data.get("is_sentence", False)),
    )


def read_reasonseg(root: Path, split: str, bad: BadRecords) -> list[ImageEntry]:
    if split not in SPLITS:
        raise SourceError(root, f"ReasonSeg has splits {SPLITS}, not {split!r}")
    folder = root / split
    if not folder.is_dir():
        raise SourceError(folder, "split folder not found")
    entries = []
    for path in sorted(folder.glob("*.json")):
        try:
            entries.append(read_one(path, split))
        except SourceError as exc:
            bad.report(exc)
    return entries
