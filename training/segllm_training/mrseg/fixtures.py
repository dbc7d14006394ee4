"""Small datasets written in the real source formats, from random shapes.

Why in the package and not only in the tests: the tests read them (every reader, corrupt and
truncated variants), the bench scales the RefCOCO one to ~20k images, and the README's stats
table is built from them; one writer per format keeps all three on the same files.
Objects are ellipses given as COCO polygons (12 points), boxes are the polygons' bounds.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

CLASSES = ("person", "cup", "dog", "chair", "mug", "bottle")
LVIS_ONLY = ("teapot", "lamp", "kettle")  # not COCO classes (the LVIS rule)
PARTS = {"mug": ("handle", "body", "rim"), "bottle": ("cap", "neck", "label", "base")}


def ellipse(rng: np.random.Generator, h: int, w: int) -> tuple[list[float], list[float]]:
    """A random ellipse polygon (flat xy list) and its COCO bbox ``[x, y, w, h]``."""
    rx, ry = rng.uniform(0.06, 0.2) * w, rng.uniform(0.06, 0.2) * h
    cx, cy = rng.uniform(rx + 1, w - rx - 1), rng.uniform(ry + 1, h - ry - 1)
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    xs, ys = cx + rx * np.cos(t), cy + ry * np.sin(t)
    poly = [round(float(v), 2) for xy in zip(xs, ys, strict=True) for v in xy]
    box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]
    return poly, box


def _dump(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def coco_dict(
    rng: np.random.Generator,
    n_images: int,
    classes: tuple[str, ...] = CLASSES,
    per_image: tuple[int, int] = (2, 7),
    size: tuple[int, int] = (120, 160),
    prefix: str = "train2014/COCO_train2014_",
) -> dict:
    """COCO instances JSON content: ``n_images`` images with ellipse objects."""
    cats = [{"id": i + 1, "name": n, "supercategory": "thing"} for i, n in enumerate(classes)]
    images, anns = [], []
    for i in range(1, n_images + 1):
        h, w = size
        images.append({"id": i, "file_name": f"{prefix}{i:012d}.jpg", "height": h, "width": w})
        for _ in range(int(rng.integers(per_image[0], per_image[1] + 1))):
            poly, box = ellipse(rng, h, w)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(rng.integers(len(cats))) + 1,
                    "segmentation": [poly],
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}


def write_refer(root: Path, rng: np.random.Generator, n_images: int = 6, umd: bool = False) -> Path:
    """``refs(unc).p`` (or ``refs(umd).p``) + ``instances.json``; images split train/val/testA."""
    root.mkdir(parents=True, exist_ok=True)
    coco = coco_dict(rng, n_images)
    _dump(root / "instances.json", coco)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    splits = ("train", "val", "test") if umd else ("train", "val", "testA")
    refs = []
    for ann in coco["annotations"]:
        if rng.random() < 0.15:
            continue  # not every object is referred to
        split = splits[0] if ann["image_id"] % 3 else splits[1 + ann["image_id"] % 2]
        sents = [
            {
                "sent": f"{names[ann['category_id']]} number {ann['id']}",
                "sent_id": 2 * ann["id"] + k,
            }
            for k in range(2)
        ]
        refs.append(
            {
                "ref_id": len(refs),
                "ann_id": ann["id"],
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "split": split,
                "file_name": f"COCO_train2014_{ann['image_id']:012d}_{ann['id']}.jpg",
                "sent_ids": [s["sent_id"] for s in sents],
                "sentences": [dict(s, raw=s["sent"], tokens=s["sent"].split()) for s in sents],
            }
        )
    path = root / f"refs({'umd' if umd else 'unc'}).p"
    path.write_bytes(pickle.dumps(refs, protocol=2))
    return path


def write_lvis(
    root: Path, rng: np.random.Generator, split: str = "train", n_images: int = 5
) -> Path:
    """``lvis_v1_{split}.json``: ``coco_url`` instead of ``file_name``, LVIS category fields."""
    coco = coco_dict(rng, n_images, CLASSES + LVIS_ONLY, per_image=(3, 9))
    for img in coco["images"]:
        img["coco_url"] = f"http://images.cocodataset.org/{split}2017/{img.pop('file_name')[-16:]}"
        img["neg_category_ids"], img["not_exhaustive_category_ids"] = [], []
    for ann in coco["annotations"]:
        del ann["iscrowd"]
    for cat in coco["categories"]:
        cat.update(synonyms=[cat["name"]], frequency="c", synset=f"{cat['name']}.n.01")
    return _dump(root / f"lvis_v1_{split}.json", coco)


def write_paco(
    root: Path, rng: np.random.Generator, split: str = "train", n_images: int = 5
) -> Path:
    """``paco_lvis_v1_{split}.json``: objects plus ``object:part`` annotations (obj_ann_id)."""
    coco = coco_dict(rng, n_images, ("mug", "bottle"), per_image=(1, 5), size=(160, 160))
    cats = coco["categories"]
    for obj, parts in PARTS.items():
        cats += [
            {"id": len(cats) + 1, "name": f"{obj}:{p}", "supercategory": "PART"} for p in parts
        ]
    cat_id = {c["name"]: c["id"] for c in cats}
    names = {c["id"]: c["name"] for c in cats}
    parts_anns = []
    for ann in coco["annotations"]:
        ann["obj_ann_id"] = ann["id"]
        x, y, bw, bh = ann["bbox"]
        obj = names[ann["category_id"]]
        for k, part in enumerate(PARTS[obj]):
            if rng.random() < 0.2:
                continue
            px, pw = x + bw * k / len(PARTS[obj]), bw / len(PARTS[obj])
            poly = [px, y, px + pw, y, px + pw, y + bh, px, y + bh]
            parts_anns.append(
                {
                    "id": 10_000 + len(parts_anns),
                    "image_id": ann["image_id"],
                    "category_id": cat_id[f"{obj}:{part}"],
                    "obj_ann_id": ann["id"],
                    "segmentation": [poly],
                    "bbox": [px, y, pw, bh],
                    "area": pw * bh,
                    "iscrowd": 0,
                }
            )
    coco["annotations"] += parts_anns
    return _dump(root / f"paco_lvis_v1_{split}.json", coco)


def write_coco_instances(
    root: Path, rng: np.random.Generator, split: str = "train", n_images: int = 4
) -> Path:
    """COCO 2017 ``annotations/instances_{split}2017.json`` plus the JPEG images."""
    coco = coco_dict(rng, n_images, prefix="")
    for img in coco["images"]:
        img["file_name"] = f"{img['id']:012d}.jpg"
        pixels = rng.integers(0, 255, (img["height"], img["width"], 3), dtype=np.uint8)
        (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / f"{split}2017" / img["file_name"])
    return _dump(root / "annotations" / f"instances_{split}2017.json", coco)


def write_visual_genome(root: Path, rng: np.random.Generator, n_images: int = 4) -> Path:
    """``image_data.json``, ``objects.json``, ``relationships.json`` and the JPEG images."""
    predicates = ("on", "holding", "wearing", "next to", "has")
    image_data, objects, relationships = [], [], []
    for i in range(1, n_images + 1):
        h, w = 96, 128
        rel = f"VG_100K/{i}.jpg"
        (root / "VG_100K").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / rel)
        image_data.append(
            {
                "image_id": i,
                "width": w,
                "height": h,
                "url": f"https://cs.stanford.edu/people/rak248/{rel}",
                "coco_id": None,
                "flickr_id": None,
            }
        )
        objs = []
        for k in range(int(rng.integers(2, 6))):
            _, (x, y, bw, bh) = ellipse(rng, h, w)
            objs.append(
                {
                    "object_id": i * 100 + k,
                    "x": int(x),
                    "y": int(y),
                    "w": max(2, int(bw)),
                    "h": max(2, int(bh)),
                    "names": [CLASSES[int(rng.integers(len(CLASSES)))]],
                    "synsets": [],
                }
            )
        objects.append({"image_id": i, "objects": objs})
        rels = []
        for r in range(int(rng.integers(1, 7))):
            a, b = rng.choice(len(objs), 2, replace=False)
            subj = {k: v for k, v in objs[a].items() if k != "names"} | {
                "name": objs[a]["names"][0]
            }
            rels.append(
                {
                    "relationship_id": i * 100 + r,
                    "predicate": predicates[int(rng.integers(len(predicates)))].upper(),
                    "subject": subj,
                    "object": objs[b],
                    "synsets": [],
                }
            )
        relationships.append({"image_id": i, "relationships": rels})
    _dump(root / "image_data.json", image_data)
    _dump(root / "objects.json", objects)
    return _dump(root / "relationships.json", relationships)


def _ellipse_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    poly, _ = ellipse(rng, h, w)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w))).astype(bool)


def write_pascal_part(
    root: Path, rng: np.random.Generator, split: str = "train", n_images: int = 3
) -> Path:
    """``ppp_datasetspec.yaml`` + ``labels/{training,validation}/*.tif`` (int32 uids)."""
    spec = {
        "version": "2.0",
        "name": "PASCAL Panoptic Parts",
        "scene_class2part_classes": {
            "background": [],
            "sky": [],
            "person": ["head", "torso", "leg"],
            "cow": ["head", "leg", "tail"],
        },
        "scene_classes_with_instances": ["person", "cow"],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "ppp_datasetspec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    sub = {"train": "training", "val": "validation"}[split]
    (root / "labels" / sub).mkdir(parents=True, exist_ok=True)
    for n in range(n_images):
        h, w = 80, 100
        uids = np.full((h, w), 1, np.int32)  # sky, semantic only
        for inst in range(1, int(rng.integers(1, 4)) + 1):
            sid = int(rng.integers(2, 4))
            mask = _ellipse_mask(rng, h, w)
            ys = np.nonzero(mask)[0]
            thirds = np.digitize(np.arange(h), np.quantile(ys, [1 / 3, 2 / 3]))[:, None] + 1
            uids = np.where(mask, (sid * 1000 + inst) * 100 + np.broadcast_to(thirds, (h, w)), uids)
        Image.fromarray(uids.astype(np.int32)).save(root / "labels" / sub / f"2008_{n:06d}.tif")
    return root / "labels" / sub


def write_semantic(
    root: Path,
    rng: np.random.Generator,
    source: str,
    split: str = "train",
    n_images: int = 3,
    per_image: int = 3,
) -> Path:
    """ADE20K (``objectInfo150.csv`` + ``annotations/*/*.png``, 0 = other) or COCO-Stuff
    (``labels.txt`` + ``stuffthingmaps_trainval2017/*/*.png``, 255 = unlabeled); ``per_image``
    of the 6 classes drawn into each map (later ellipses may hide earlier ones)."""
    names = ("wall", "floor", "tree", "ceiling", "road", "bed")
    root.mkdir(parents=True, exist_ok=True)
    if source == "ade20k":
        rows = ["Idx,Ratio,Train,Val,Name"] + [
            f"{i},0.1,100,10,{n};{n}s" for i, n in enumerate(names, 1)
        ]
        (root / "objectInfo150.csv").write_text("\n".join(rows) + "\n")
        folder, void, values = (
            root / "annotations" / {"train": "training", "val": "validation"}[split],
            0,
            range(1, 7),
        )
    else:
        (root / "labels.txt").write_text(
            "0: unlabeled\n" + "".join(f"{i}: {n}\n" for i, n in enumerate(names, 1))
        )
        folder, void, values = root / "stuffthingmaps_trainval2017" / f"{split}2017", 255, range(6)
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(n_images):
        h, w = 64, 80
        label = np.full((h, w), void, np.uint8)
        for v in rng.choice(list(values), per_image, replace=False):
            label[_ellipse_mask(rng, h, w)] = v
        Image.fromarray(label).save(folder / f"{n:012d}.png")
    return folder


def write_reasonseg(
    root: Path, rng: np.random.Generator, split: str = "train", n_images: int = 3
) -> Path:
    """``{split}/<name>.jpg`` + LabelMe-style ``<name>.json`` (target and ignore polygons)."""
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(n_images):
        h, w = 90, 120
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            folder / f"img{n}.jpg"
        )
        target, _ = ellipse(rng, h, w)
        ignore, _ = ellipse(rng, h, w)
        shapes = [
            {
                "label": "target",
                "shape_type": "polygon",
                "points": np.reshape(target, (-1, 2)).tolist(),
            },
            {
                "label": "ignore",
                "shape_type": "polygon",
                "points": np.reshape(ignore, (-1, 2)).tolist(),
            },
            {"label": "flag", "shape_type": "polygon", "points": [[0, 0], [1, 0], [1, 1]]},
        ]
        sentence = bool(n % 2)
        text = (
            ["Where would you put the flowers in this room?"] if sentence else ["the vase", "vase"]
        )
        _dump(folder / f"img{n}.json", {"text": text, "is_sentence": sentence, "shapes": shapes})
    return folder
