"""Label-map formats: Pascal Panoptic Parts, ADE20K and COCO-Stuff.

Pascal-Panoptic-Parts (pmeletis/panoptic_parts): ``labels/{training,validation}/<id>.tif``,
one int32 *uid* per pixel: ``sid`` (<= 99, semantic class only), ``sid * 10**3 + iid``
(instance), or ``(sid * 10**3 + iid) * 10**2 + pid`` (part ``pid`` of that instance; ``pid`` 0
= no part information). Class names come from the dataset spec YAML
(``ppp_datasetspec.yaml``): ``scene_class2part_classes`` is an ordered mapping whose n-th key
is ``sid`` n and whose part list gives ``pid`` 1, 2, ...
ADE20K (SceneParsing, ``ADEChallengeData2016``): ``annotations/{training,validation}/*.png``,
uint8, 0 = other, k = the k-th row of ``objectInfo150.csv`` (``Idx,Ratio,Train,Val,Name``).
COCO-Stuff 164k: ``stuffthingmaps_trainval2017/{train,val}2017/*.png``, uint8, value v = class
with id v + 1 in ``labels.txt`` (``"1: person"``; 0 = unlabeled), 255 = unlabeled.
Readers only list the files and the class table (cheap, in the parent process); the maps
themselves are decoded in the workers by :func:`read_label_map`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from segllm_ros.interface.mask_codec import mask_to_box

from ..entries import BadRecords, ImageEntry, Instance, SourceError
from ..schema import encode_mask

SPLIT_DIRS: dict[str, dict[str, str]] = {
    "pascal_part": {"train": "training", "val": "validation"},
    "ade20k": {"train": "training", "val": "validation"},
    "cocostuff": {"train": "train2017", "val": "val2017"},
}


def read_label_map(path: str | Path) -> np.ndarray:
    """Decode a PNG/TIFF label map to int64 HxW; corrupt or truncated files name the file."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except FileNotFoundError:
        raise SourceError(path, "label file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise SourceError(path, f"corrupt or truncated label map: {exc}") from None
    if arr.ndim != 2:
        raise SourceError(path, f"label map must be single-channel, got shape {arr.shape}")
    return arr.astype(np.int64)


def decode_uids(uids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Panoptic-parts uids -> (sid, iid, pid); -1 where the level carries no information."""
    padded = np.where(uids <= 99, uids * 10**5, np.where(uids <= 99_999, uids * 10**2, uids))
    sid_iid, pid = np.divmod(padded, 10**2)
    sid, iid = np.divmod(sid_iid, 10**3)
    iid = np.where(uids <= 99, -1, iid)
    pid = np.where(pid == 0, -1, pid)
    return sid, iid, pid


def _split_dir(source: str, split: str, root: Path) -> str:
    try:
        return SPLIT_DIRS[source][split]
    except KeyError:
        raise SourceError(
            root, f"{source} has splits {sorted(SPLIT_DIRS[source])}, not {split!r}"
        ) from None


def _entries(
    label_dir: Path,
    pattern: str,
    image_dir: Path,
    split: str,
    classes: dict[int, str],
    image_ext: str = ".jpg",
) -> list[ImageEntry]:
    if not label_dir.is_dir():
        raise SourceError(label_dir, "label folder not found")
    entries = []
    for label in sorted(label_dir.glob(pattern)):
        entries.append(
            ImageEntry(
                image_id=label.stem,
                file_name=f"{image_dir.name}/{label.stem}{image_ext}",
                height=0,
                width=0,
                split=split,
                label_file=str(label),
                classes=classes,
                source_file=str(label),
            )
        )
    return entries


def read_pascal_part(root: Path, split: str, bad: BadRecords) -> list[ImageEntry]:
    spec_path = root / "ppp_datasetspec.yaml"
    if not spec_path.is_file():
        raise SourceError(spec_path, "file not found")
    try:
        spec = yaml.safe_load(spec_path.read_text())
        mapping = spec["scene_class2part_classes"]
        if not isinstance(mapping, dict):
            raise TypeError("scene_class2part_classes must be a mapping")
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise SourceError(spec_path, f"bad dataset spec: {type(exc).__name__}: {exc}") from None
    classes: dict[int, str] = {}
    for sid, (scene, parts) in enumerate(mapping.items()):
        classes[sid] = str(scene)
        for pid, part in enumerate(parts or [], start=1):
            classes[part_key(sid, pid)] = str(part)
    sub = _split_dir("pascal_part", split, root)
    return _entries(root / "labels" / sub, "*.tif", root / "images", split, classes)


def part_key(sid: int, pid: int) -> int:
    """Key of part ``pid`` of class ``sid`` in ``ImageEntry.classes`` for Pascal parts."""
    return sid * 100 + pid + 10**6


def read_ade20k(root: Path, split: str, bad: BadRecords) -> list[ImageEntry]:
    info = root / "objectInfo150.csv"
    if not info.is_file():
        raise SourceError(info, "file not found")
    classes: dict[int, str] = {}
    with info.open(newline="") as f:
        for row_no, row in enumerate(csv.DictReader(f), start=2):
            try:
                classes[int(row["Idx"])] = row["Name"].split(";")[0].strip()
            except (KeyError, TypeError, ValueError, AttributeError):
                raise SourceError(info, f"bad row {row!r}", f"line {row_no}") from None
    if not classes:
        raise SourceError(info, "no classes (truncated?)")
    sub = _split_dir("ade20k", split, root)
    return _entries(root / "annotations" / sub, "*.png", root / "images" / sub, split, classes)


def read_cocostuff(root: Path, split: str, bad: BadRecords) -> list[ImageEntry]:
    labels = root / "labels.txt"
    if not labels.is_file():
        raise SourceError(labels, "file not found")
    classes: dict[int, str] = {}
    for line_no, line in enumerate(labels.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        idx, sep, name = line.partition(":")
        if not sep or not idx.strip().isdigit() or not name.strip():
            raise SourceError(labels, f"expected 'id: name', got {line!r}", f"line {line_no}")
        if int(idx) > 0:
            classes[int(idx) - 1] = name.strip()
    if not classes:
        raise SourceError(labels, "no classes (truncated?)")
    sub = _split_dir("cocostuff", split, root)
    return _entries(root / "stuffthingmaps_trainval2017" / sub, "*.png", root / sub, split, classes)


def _instance(ann_id: str, category: str, mask: np.ndarray, parent: str | None = None) -> Instance:
    return Instance(
        ann_id=ann_id,
        category=category,
        bbox=mask_to_box(mask),  # type: ignore[arg-type]  # never empty: made from present values
        segmentation=encode_mask(mask),
        parent=parent,
    )


def _named(entry: ImageEntry, key: int, what: str) -> str:
    if key not in entry.classes:
        raise SourceError(entry.label_file, f"{what} {key} is not in the class list")
    return entry.classes[key]


def expand_semantic(entry: ImageEntry) -> ImageEntry:
    """Worker side: one instance per class present (ADE20K 0 and COCO-Stuff 255 are void)."""
    labels = read_label_map(entry.label_file)
    entry.height, entry.width = labels.shape
    values = [int(v) for v in np.unique(labels)]
    unknown = sorted(set(values) - set(entry.classes) - {0, 255})
    if unknown:
        raise SourceError(entry.label_file, f"label values {unknown[:5]} are not in the class list")
    entry.instances = [
        _instance(f"{entry.image_id}:{v}", entry.classes[v], labels == v)
        for v in values
        if v in entry.classes
    ]
    return entry


def expand_pascal_part(entry: ImageEntry) -> ImageEntry:
    """Worker side: instances (sid, iid) and their parts (sid, iid, pid) from the uid map."""
    uids = read_label_map(entry.label_file)
    entry.height, entry.width = uids.shape
    sid, iid, pid = decode_uids(uids)
    entry.instances = []
    has_instance = iid >= 0
    for s, i in sorted(
        {(int(a), int(b)) for a, b in zip(sid[has_instance], iid[has_instance], strict=True)}
    ):
        mask = (sid == s) & (iid == i)
        obj_id = f"{entry.image_id}:{s}_{i}"
        entry.instances.append(_instance(obj_id, _named(entry, s, "sid"), mask))
        for p in sorted({int(v) for v in np.unique(pid[mask]) if v >= 0}):
            entry.instances.append(
                _instance(
                    f"{obj_id}_{p}",
                    _named(entry, part_key(s, p), f"part of sid {s}, pid"),
                    mask & (pid == p),
                    parent=obj_id,
                )
            )
    return entry
