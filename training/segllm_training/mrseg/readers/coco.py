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

import re
from collections.abc import Callable
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

COCO_SYNSETS: dict[str, str] = {
    "person": "person.n.01",
    "bicycle": "bicycle.n.01",
    "car": "car.n.01",
    "motorcycle": "motorcycle.n.01",
    "airplane": "airplane.n.01",
    "bus": "bus.n.01",
    "train": "train.n.01",
    "truck": "truck.n.01",
    "boat": "boat.n.01",
    "traffic_light": "traffic_light.n.01",
    "fire_hydrant": "fireplug.n.01",
    "stop_sign": "stop_sign.n.01",
    "parking_meter": "parking_meter.n.01",
    "bench": "bench.n.01",
    "bird": "bird.n.01",
    "cat": "cat.n.01",
    "dog": "dog.n.01",
    "horse": "horse.n.01",
    "sheep": "sheep.n.01",
    "cow": "beef.n.01",
    "elephant": "elephant.n.01",
    "bear": "bear.n.01",
    "zebra": "zebra.n.01",
    "giraffe": "giraffe.n.01",
    "backpack": "backpack.n.01",
    "umbrella": "umbrella.n.01",
    "handbag": "bag.n.04",
    "tie": "necktie.n.01",
    "suitcase": "bag.n.06",
    "frisbee": "frisbee.n.01",
    "skis": "ski.n.01",
    "snowboard": "snowboard.n.01",
    "sports_ball": "ball.n.06",
    "kite": "kite.n.03",
    "baseball_bat": "baseball_bat.n.01",
    "baseball_glove": "baseball_glove.n.01",
    "skateboard": "skateboard.n.01",
    "surfboard": "surfboard.n.01",
    "tennis_racket": "tennis_racket.n.01",
    "bottle": "bottle.n.01",
    "wine_glass": "wineglass.n.01",
    "cup": "cup.n.01",
    "fork": "fork.n.01",
    "knife": "knife.n.01",
    "spoon": "spoon.n.01",
    "bowl": "bowl.n.03",
    "banana": "banana.n.02",
    "apple": "apple.n.01",
    "sandwich": "sandwich.n.01",
    "orange": "orange.n.01",
    "broccoli": "broccoli.n.01",
    "carrot": "carrot.n.01",
    "hot_dog": "frank.n.02",
    "pizza": "pizza.n.01",
    "donut": "doughnut.n.02",
    "cake": "cake.n.03",
    "chair": "chair.n.01",
    "couch": "sofa.n.01",
    "potted_plant": "pot.n.04",
    "bed": "bed.n.01",
    "dining_table": "dining_table.n.01",
    "toilet": "toilet.n.02",
    "tv": "television_receiver.n.01",
    "laptop": "laptop.n.01",
    "mouse": "mouse.n.04",
    "remote": "remote_control.n.01",
    "keyboard": "computer_keyboard.n.01",
    "cell_phone": "cellular_telephone.n.01",
    "microwave": "microwave.n.02",
    "oven": "oven.n.01",
    "toaster": "toaster.n.02",
    "sink": "sink.n.01",
    "refrigerator": "electric_refrigerator.n.01",
    "book": "book.n.01",
    "clock": "clock.n.01",
    "vase": "vase.n.01",
    "scissors": "scissors.n.01",
    "teddy_bear": "teddy.n.01",
    "hair_drier": "hand_blower.n.01",
    "toothbrush": "toothbrush.n.01",
}
"""The 80 COCO thing classes (spaces as underscores) -> their WordNet synset, the official
LVIS<->COCO mapping (lvis-api ``data/coco_to_synset.json``); LVIS categories carry ``synset``."""
_COCO_SYNSET_SET = frozenset(COCO_SYNSETS.values())


_QUALIFIER = re.compile(r"_?\([^()]*\)")
"""LVIS's sense qualifier: ``car_(automobile)``, ``mouse_(computer_equipment)``."""


def readable(name: str) -> str:
    """LVIS/PACO category names use underscores, a sense qualifier and ``object:part``;
    queries use the words: ``car_(automobile)`` -> ``car``."""
    return _QUALIFIER.sub("", name.split(":")[-1]).replace("_", " ").strip()


def is_coco_class(category: dict) -> bool:
    """Whether an LVIS category is one of the 80 COCO classes: its ``synset`` is a COCO
    class's (the official mapping), or its name or one of its ``synonyms``, without the sense
    qualifier, is a COCO class name (``sofa`` -> ``couch``, ``car_(automobile)`` -> ``car``)."""
    if category.get("synset") in _COCO_SYNSET_SET:
        return True
    names = [category["name"], *(category.get("synonyms") or [])]
    return any(readable(str(n)).lower().replace(" ", "_") in COCO_SYNSETS for n in names)


def _file_name(image: dict) -> str:
    if "file_name" in image:
        return str(image["file_name"])
    # LVIS v1: http://images.cocodataset.org/train2017/000000391895.jpg -> train2017/...
    return "/".join(str(image["coco_url"]).split("/")[-2:])


def read_coco(
    path: Path, split: str, bad: BadRecords, skip: Callable[[dict], bool] | None = None
) -> tuple[dict[Any, ImageEntry], dict]:
    """Images (with their instances) and categories of one COCO-style file; annotations of a
    category for which ``skip(category)`` is true are validated, then left out."""
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
            if isinstance(seg, dict) and list(seg.get("size", [])) != [image.height, image.width]:
                raise SourceError(
                    path,
                    f"RLE size {seg.get('size')} is not the image's {[image.height, image.width]}",
                    where,
                )
            box = xywh_to_xyxy(ann["bbox"], path, where)
        except SourceError as exc:
            bad.report(exc)
            continue
        if ann.get("iscrowd", 0) or (skip is not None and skip(categories[ann["category_id"]])):
            continue  # crowd regions are not single objects; skipped classes not wanted
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
    """``lvis_v1_{split}.json`` (LVIS v1 has train and val). MRSeg takes only LVIS's non-COCO
    classes (RefCOCO covers those), so COCO-class annotations are dropped here, where the
    category's synset and synonyms are known (:func:`is_coco_class`)."""
    images, _ = read_coco(root / f"lvis_v1_{split}.json", split, bad, skip=is_coco_class)
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
