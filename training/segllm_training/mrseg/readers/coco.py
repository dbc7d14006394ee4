"""COCO-style instance JSON: COCO instances, LVIS v1 and PACO-LVIS (object -> part links).

Format (cocodataset.org/#format-data): ``images`` (``id``, ``height``, ``width``,
``file_name``; LVIS has ``coco_url`` instead of ``file_name``), ``annotations`` (``id``,
``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``segmentation`` as polygons or RLE,
``iscrowd`` in COCO only) and ``categories`` (``id``, ``name``; LVIS adds ``synonyms``).
PACO-LVIS puts objects and parts in one list: a part's category name is ``"object:part"`` and
its annotation's ``obj_ann_id`` is the id of the object annotation it belongs to (objects
point to themselves).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..entries import (
    BadRecords,
    ImageEntry,
    Instance,
    SourceError,
    load_json,
    require,
    xywh_to_xyxy,
)

COCO_CLASSES: frozenset[str] = frozenset(
    [
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "airplane",
        "bus",
        "train",
        "truck",
        "boat",
        "traffic_light",
        "fire_hydrant",
        "stop_sign",
        "parking_meter",
        "bench",
        "bird",
        "cat",
        "dog",
        "horse",
        "sheep",
        "cow",
        "elephant",
        "bear",
        "zebra",
        "giraffe",
        "backpack",
        "umbrella",
        "handbag",
        "tie",
        "suitcase",
        "frisbee",
        "skis",
        "snowboard",
        "sports_ball",
        "kite",
        "baseball_bat",
        "baseball_glove",
        "skateboard",
        "surfboard",
        "tennis_racket",
        "bottle",
        "wine_glass",
        "cup",
        "fork",
        "knife",
        "spoon",
        "bowl",
        "banana",
        "apple",
        "sandwich",
        "orange",
        "broccoli",
        "carrot",
        "hot_dog",
        "pizza",
        "donut",
        "cake",
        "chair",
        "couch",
        "potted_plant",
        "bed",
        "dining_table",
        "toilet",
        "tv",
        "laptop",
        "mouse",
        "remote",
        "keyboard",
        "cell_phone",
        "microwave",
        "oven",
        "toaster",
        "sink",
        "refrigerator",
        "book",
        "clock",
        "vase",
        "scissors",
        "teddy_bear",
        "hair_drier",
        "toothbrush",
    ]
)
"""The 80 COCO thing classes, spaces as underscores (LVIS spelling), for the LVIS rule."""


def readable(name: str) -> str:
    """LVIS/PACO category names use underscores and ``object:part``; queries use words."""
    return name.split(":")[-1].replace("_", " ").strip()


def _file_name(image: dict) -> str:
    if "file_name" in image:
        return str(image["file_name"])
    # LVIS v1: http://images.cocodataset.org/train2017/000000391895.jpg -> train2017/...
    return "/".join(str(image["coco_url"]).split("/")[-2:])


def read_coco(path: Path, split: str, bad: BadRecords) -> tuple[dict[Any, ImageEntry], dict]:
    """Images (with their instances) and categories of one COCO-style file."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise SourceError(path, "top level must be an object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise SourceError(path, f"'{key}' must be a list")
    categories: dict[Any, dict] = {}
    for i, cat in enumerate(data["categories"]):
        require(cat, ("id", "name"), path, f"categories[{i}]")
        categories[cat["id"]] = cat
    images: dict[Any, ImageEntry] = {}
    for i, img in enumerate(data["images"]):
        try:
            require(img, ("id", "height", "width"), path, f"images[{i}]")
            if "file_name" not in img and "coco_url" not in img:
                raise SourceError(
                    path, "needs file_name or coco_url", f"images[{i}] id={img['id']}"
                )
            if int(img["height"]) <= 0 or int(img["width"]) <= 0:
                raise SourceError(path, "non-positive size", f"images[{i}] id={img['id']}")
        except SourceError as exc:
            bad.report(exc)
            continue
        images[img["id"]] = ImageEntry(
            image_id=img["id"],
            file_name=_file_name(img),
            height=int(img["height"]),
            width=int(img["width"]),
            split=split,
            source_file=str(path),
        )
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        try:
            require(ann, ("id", "image_id", "category_id", "bbox", "segmentation"), path, where)
            where = f"annotations[{i}] id={ann['id']}"
            if ann["category_id"] not in categories:
                raise SourceError(path, f"unknown category_id {ann['category_id']}", where)
            if ann["image_id"] not in images:
                raise SourceError(path, f"unknown image_id {ann['image_id']}", where)
            seg = ann["segmentation"]
            if not isinstance(seg, (list, dict)) or (isinstance(seg, dict) and "counts" not in seg):
                raise SourceError(path, "segmentation must be polygons or RLE", where)
            image = images[ann["image_id"]]
            if isinstance(seg, dict) and list(seg.get("size", [])) != [image.height,
                                                                        image.width]:
                raise SourceError(path, f"RLE size {seg.get('size')} is not the image's "
                                        f"{[image.height, image.width]}", where)
            box = xywh_to_xyxy(ann["bbox"], path, where)
        except SourceError as exc:
            bad.report(exc)
            continue
        if ann.get("iscrowd", 0):
            continue  # crowd regions are not single objects
        name = categories[ann["category_id"]]["name"]
        obj = ann.get("obj_ann_id", ann["id"])
        images[ann["image_id"]].instances.append(
            Instance(
                ann_id=ann["id"],
                category=readable(name),
                bbox=box,
                segmentation=seg,
                parent=obj if obj != ann["id"] else None,
            )
        )
    return images, categories


def read_lvis(root: Path, split: str, bad: BadRecords) -> list[ImageEntry]:
    """``lvis_v1_{split}.json`` (LVIS v1 has train and val)."""
    images, _ = read_coco(root / f"lvis_v1_{split}.json", split, bad)
    return list(images.values())


def read_paco(root: Path, split: str, bad: BadRecords) -> list[ImageEntry]:
    """``paco_lvis_v1_{split}.json``; every part must point to an object of its image."""
    path = root / f"paco_lvis_v1_{split}.json"
    images, _ = read_coco(path, split, bad)
    for entry in images.values():
        objects = {inst.ann_id for inst in entry.instances if inst.parent is None}
        kept = []
        for inst in entry.instances:
            if inst.parent is not None and inst.parent not in objects:
                bad.report(
                    SourceError(
                        path,
                        f"part points to missing object {inst.parent}",
                        f"annotation id={inst.ann_id}",
                    )
                )
                continue
            kept.append(inst)
        entry.instances = kept
    return list(images.values())


def read_coco_instances(root: Path, split: str, bad: BadRecords) -> list[ImageEntry]:
    """COCO 2017 ``annotations/instances_{split}2017.json`` (Attributes-COCO)."""
    images, _ = read_coco(root / "annotations" / f"instances_{split}2017.json", split, bad)
    for entry in images.values():
        entry.image_file = str(root / f"{split}2017" / Path(entry.file_name).name)
    return list(images.values())
