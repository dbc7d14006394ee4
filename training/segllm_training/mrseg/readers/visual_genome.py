"""Visual Genome v1.2: ``image_data.json``, ``objects.json``, ``relationships.json``.

``image_data.json``: ``[{"image_id", "width", "height", "url", "coco_id", "flickr_id"}]``
(the url's last two parts, ``VG_100K/1.jpg``, are the path under the image root).
``objects.json``: ``[{"image_id", "objects": [{"object_id", "x", "y", "w", "h", "names"}]}]``.
``relationships.json``: ``[{"image_id", "relationships": [{"relationship_id", "predicate",
"subject": {object}, "object": {object}}]}]`` where the embedded objects repeat the box and
``name`` or ``names``. Boxes only: masks come from a box-prompted SAM at generation time.
Visual Genome defines no splits; MRSeg has train and val (Table A1: 10,524 val images), so
:func:`visual_genome_split` assigns each image by a hash of its id: the same for every build,
machine and worker count, and train and val never share an image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..config import BuildConfig
from ..entries import (
    BadRecords,
    ImageEntry,
    Instance,
    Relationship,
    SourceError,
    load_json,
    require,
)


def _object(obj: Any, path: Path, where: str, known: dict[Any, list]) -> Instance:
    """A relationship end; its name falls back to ``objects.json`` (``known``)."""
    require(obj, ("object_id", "x", "y", "w", "h"), path, where)
    names = obj.get("names") or ([obj["name"]] if obj.get("name") else [])
    names = names or known.get(obj["object_id"], [])
    if not names or not all(isinstance(n, str) for n in names):
        raise SourceError(path, "object has no name", where)
    x, y, w, h = (obj[k] for k in ("x", "y", "w", "h"))
    if not all(isinstance(v, (int, float)) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise SourceError(path, f"bad box {(x, y, w, h)}", where)
    return Instance(
        ann_id=obj["object_id"], category=names[0].strip().lower(), bbox=(x, y, x + w, y + h)
    )


def _list_file(path: Path) -> list:
    data = load_json(path)
    if not isinstance(data, list):
        raise SourceError(path, f"expected a list of images, got {type(data).__name__}")
    return data


SPLITS = ("train", "val")


def visual_genome_split(entry: ImageEntry, cfg: BuildConfig) -> str:
    """``val`` for ``cfg.visual_genome_val_share`` of the images (by a SHA-256 of the image
    id, uniform in [0, 1)), ``train`` for the rest."""
    digest = hashlib.sha256(f"visual_genome|{entry.image_id}".encode()).digest()
    share = int.from_bytes(digest[:8], "little") / 2**64
    return "val" if share < cfg.visual_genome_val_share else "train"


def read_visual_genome(root: Path, split: str, bad: BadRecords) -> list[ImageEntry]:
    """Images that have at least one relationship, with the objects those relationships use
    (all of them: the build keeps the split's share, :func:`visual_genome_split`)."""
    if split not in SPLITS:
        raise SourceError(root, f"Visual Genome has splits {SPLITS}, not {split!r}")
    image_path = root / "image_data.json"
    images: dict[Any, ImageEntry] = {}
    for i, img in enumerate(_list_file(image_path)):
        try:
            require(img, ("image_id", "width", "height", "url"), image_path, f"[{i}]")
        except SourceError as exc:
            bad.report(exc)
            continue
        rel = "/".join(str(img["url"]).split("/")[-2:])
        images[img["image_id"]] = ImageEntry(
            image_id=img["image_id"],
            file_name=rel,
            height=int(img["height"]),
            width=int(img["width"]),
            split=split,
            image_file=str(root / rel),
            source_file=str(root / "relationships.json"),
        )
    objects_path = root / "objects.json"
    known: dict[Any, list] = {}
    for i, item in enumerate(_list_file(objects_path)):
        try:
            require(item, ("image_id", "objects"), objects_path, f"[{i}]")
            if not isinstance(item["objects"], list):
                raise SourceError(objects_path, "'objects' must be a list", f"[{i}]")
            if item["image_id"] not in images:
                raise SourceError(
                    objects_path, f"image_id {item['image_id']} not in image_data.json", f"[{i}]"
                )
            known.update(
                (o["object_id"], o.get("names") or [])
                for o in item["objects"]
                if isinstance(o, dict) and "object_id" in o
            )
        except SourceError as exc:
            bad.report(exc)
    rel_path = root / "relationships.json"
    for i, item in enumerate(_list_file(rel_path)):
        try:
            require(item, ("image_id", "relationships"), rel_path, f"[{i}]")
            entry = images.get(item["image_id"])
            if entry is None:
                raise SourceError(
                    rel_path, f"image_id {item['image_id']} not in image_data.json", f"[{i}]"
                )
        except SourceError as exc:
            bad.report(exc)
            continue
        index: dict[Any, int] = {inst.ann_id: k for k, inst in enumerate(entry.instances)}
        for j, rel in enumerate(item["relationships"]):
            where = f"[{i}].relationships[{j}]"
            try:
                require(rel, ("relationship_id", "predicate", "subject", "object"), rel_path, where)
                ends = [
                    _object(rel[k], rel_path, f"{where}.{k}", known) for k in ("subject", "object")
                ]
                if not str(rel["predicate"]).strip():
                    raise SourceError(rel_path, "empty predicate", where)
            except SourceError as exc:
                bad.report(exc)
                continue
            ids = []
            for inst in ends:
                if inst.ann_id not in index:
                    index[inst.ann_id] = len(entry.instances)
                    entry.instances.append(inst)
                ids.append(index[inst.ann_id])
            entry.relationships.append(
                Relationship(
                    rel["relationship_id"], ids[0], str(rel["predicate"]).strip().lower(), ids[1]
                )
            )
    return [e for e in images.values() if e.relationships]
