"""RefCOCO, RefCOCO+ and RefCOCOg in the layout of lichengunc/refer.

``<root>/refs(unc).p`` (RefCOCO, RefCOCO+) or ``refs(umd).p`` (RefCOCOg): a pickled list of
refs, each ``{"ref_id", "ann_id", "image_id", "category_id", "split", "file_name",
"sentences": [{"sent", "raw", "tokens", "sent_id"}, ...]}``; ``<root>/instances.json``: COCO
instances of the referenced images. A ref's ``split`` (train / val / testA / testB / test)
defines the split of its image. The pickles are unpickled with a loader that refuses every
class, so a crafted file cannot run code: refs are plain lists, dicts and strings.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from ..entries import BadRecords, ImageEntry, SourceError, require
from .coco import read_coco

SPLIT_BY: dict[str, str] = {
    "refcoco": "unc",
    "refcoco+": "unc",
    "refcocog": "umd",
    "mrseg_hard": "unc",
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        raise pickle.UnpicklingError(f"refs pickles hold plain data; refusing {module}.{name}")


def load_refs(path: Path) -> list[dict]:
    """The refs list; corrupt, truncated or non-list pickles raise naming the file."""
    if not path.is_file():
        raise SourceError(path, "file not found")
    try:
        with path.open("rb") as f:
            refs = _PlainUnpickler(f, encoding="utf-8").load()
    except (pickle.UnpicklingError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise SourceError(
            path, f"corrupt or truncated pickle: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(refs, list):
        raise SourceError(path, f"expected a list of refs, got {type(refs).__name__}")
    return refs


def read_refer(
    root: Path, split: str, bad: BadRecords, dataset: str = "refcoco"
) -> list[ImageEntry]:
    """Images of ``split`` with their COCO instances; referred instances carry the sentences."""
    refs_path = root / f"refs({SPLIT_BY[dataset]}).p"
    refs = load_refs(refs_path)
    images, _ = read_coco(root / "instances.json", split, bad)
    sentences: dict[object, list[str]] = {}
    wanted: set[object] = set()
    for i, ref in enumerate(refs):
        try:
            require(
                ref, ("ref_id", "ann_id", "image_id", "split", "sentences"), refs_path, f"refs[{i}]"
            )
            where = f"refs[{i}] ref_id={ref['ref_id']}"
            if not isinstance(ref["sentences"], list) or not all(
                isinstance(s, dict) and isinstance(s.get("sent"), str) for s in ref["sentences"]
            ):
                raise SourceError(refs_path, "sentences must be a list of {'sent': str}", where)
            if ref["split"] == split and ref["image_id"] not in images:
                raise SourceError(
                    refs_path, f"image_id {ref['image_id']} not in instances.json", where
                )
        except SourceError as exc:
            bad.report(exc)
            continue
        if ref["split"] != split:
            continue
        wanted.add(ref["image_id"])
        sentences.setdefault(ref["ann_id"], []).extend(
            s["sent"].strip() for s in ref["sentences"] if s["sent"].strip()
        )
    entries = []
    for image_id in sorted(wanted, key=str):
        entry = images[image_id]
        for inst in entry.instances:
            inst.captions = sentences.get(inst.ann_id, [])
        entries.append(entry)
    return entries
