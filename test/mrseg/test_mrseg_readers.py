"""Every reader on small files in the real formats, plus a corrupt and a truncated file each."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from mrseg_data import SOURCE_DIRS, tiny_config, write_all

from segllm_training.mrseg.build import BuildError, build, read_source
from segllm_training.mrseg.entries import SourceError, segmentation_to_mask
from segllm_training.mrseg.readers.label_maps import decode_uids
from segllm_training.mrseg.readers.refer import load_refs
from segllm_training.mrseg.schema import encode_mask


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("mrseg"))


@pytest.fixture()
def copy(data, tmp_path):
    """A private copy of one source folder, to damage."""

    def make(source: str) -> Path:
        dst = tmp_path / SOURCE_DIRS[source]
        shutil.copytree(data / SOURCE_DIRS[source], dst)
        return dst

    return make


@pytest.mark.parametrize("source", sorted(SOURCE_DIRS))
def test_reader_reads_fixture(data, source):
    entries, skipped = read_source(source, data / SOURCE_DIRS[source], "train")
    assert entries and not skipped
    for e in entries:
        assert e.split == "train" and e.file_name
        for inst in e.instances:
            x0, y0, x1, y1 = inst.bbox
            assert x1 > x0 and y1 > y0
            if isinstance(inst.segmentation, list) and e.height:
                assert segmentation_to_mask(inst.segmentation, e.height, e.width).any()


def test_refer_splits_and_sentences(data):
    refs = load_refs(data / "refcoco" / "refs(unc).p")
    for split in ("train", "val", "testA"):
        entries, _ = read_source("refcoco", data / "refcoco", split)
        want = {r["image_id"] for r in refs if r["split"] == split}
        assert {e.image_id for e in entries} == want
        referred = {r["ann_id"]: r for r in refs if r["split"] == split}
        for e in entries:
            for inst in e.instances:
                sents = (
                    [s["sent"] for s in referred[inst.ann_id]["sentences"]]
                    if inst.ann_id in referred
                    else []
                )
                assert inst.captions == sents


def test_paco_parts_link_to_objects(data):
    entries, _ = read_source("paco_lvis", data / "paco", "train")
    for e in entries:
        objects = {i.ann_id: i for i in e.instances if i.parent is None}
        parts = [i for i in e.instances if i.parent is not None]
        assert all(p.parent in objects for p in parts)
        assert all(":" not in p.category for p in parts)
    assert any(i.parent is not None for e in entries for i in e.instances)


def test_panoptic_uid_decoding():
    sid, iid, pid = decode_uids(np.array([1, 12, 23003, 2300304]))
    assert sid.tolist() == [1, 12, 23, 23]
    assert iid.tolist() == [-1, -1, 3, 3]
    assert pid.tolist() == [-1, -1, -1, 4]


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


# source -> (file to damage, corruption that keeps the file readable but breaks a record)
def _corrupt_record(source: str, root: Path) -> Path:
    import json

    if source in ("refcoco", "refcocog", "mrseg_hard"):
        path = root / ("refs(umd).p" if source == "refcocog" else "refs(unc).p")
        refs = pickle.loads(path.read_bytes())
        del refs[0]["sentences"]
        path.write_bytes(pickle.dumps(refs))
        return path
    if source in ("lvis", "paco_lvis", "attributes_coco"):
        name = {
            "lvis": "lvis_v1_train.json",
            "paco_lvis": "paco_lvis_v1_train.json",
            "attributes_coco": "annotations/instances_train2017.json",
        }[source]
        path = root / name
        data = json.loads(path.read_text())
        data["annotations"][0]["bbox"] = [1, 2, 0, 5]
        path.write_text(json.dumps(data))
        return path
    if source == "visual_genome":
        path = root / "relationships.json"
        data = json.loads(path.read_text())
        del data[0]["relationships"][0]["subject"]["x"]
        path.write_text(json.dumps(data))
        return path
    if source == "reasonseg":
        path = root / "train" / "img0.json"
        data = json.loads(path.read_text())
        data["shapes"] = [s for s in data["shapes"] if s["label"] != "target"]
        path.write_text(json.dumps(data))
        return path
    if source == "pascal_part":  # a uid whose sid is not in the spec
        from PIL import Image

        path = sorted((root / "labels" / "training").glob("*.tif"))[0]
        uids = np.asarray(Image.open(path)).copy()
        uids[0, 0] = 9900101
        Image.fromarray(uids).save(path)
        return path
    # ade20k / cocostuff: a label value outside the class list
    from PIL import Image

    sub = "annotations/training" if source == "ade20k" else "stuffthingmaps_trainval2017/train2017"
    path = sorted((root / sub).glob("*.png"))[0]
    label = np.asarray(Image.open(path)).copy()
    label[0, 0] = 77
    Image.fromarray(label).save(path)
    return path


TRUNCATE = {
    "refcoco": "refs(unc).p",
    "refcocog": "instances.json",
    "mrseg_hard": "refs(unc).p",
    "lvis": "lvis_v1_train.json",
    "paco_lvis": "paco_lvis_v1_train.json",
    "visual_genome": "relationships.json",
    "pascal_part": "labels/training/2008_000000.tif",
    "ade20k": "annotations/training/000000000000.png",
    "cocostuff": "stuffthingmaps_trainval2017/train2017/000000000001.png",
    "reasonseg": "train/img1.json",
    "attributes_coco": "annotations/instances_train2017.json",
}


@pytest.mark.parametrize("source", sorted(TRUNCATE))
def test_truncated_file_names_the_file(copy, tmp_path, source):
    root = copy(source)
    _truncate(root / TRUNCATE[source])
    with pytest.raises((SourceError, BuildError)) as err:
        build(source, root, "train", tmp_path / "out.jsonl", tiny_config(), progress=False)
    assert Path(TRUNCATE[source]).name in str(err.value)
    assert "truncated" in str(err.value) or "corrupt" in str(err.value)
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "out.jsonl.tmp").exists()


@pytest.mark.parametrize("source", sorted(TRUNCATE))
def test_corrupt_record_is_named_and_skippable(copy, tmp_path, source):
    root = copy(source)
    damaged = _corrupt_record(source, root)
    out = tmp_path / "out.jsonl"
    with pytest.raises((SourceError, BuildError)) as err:
        build(source, root, "train", out, tiny_config(), progress=False)
    assert damaged.name in str(err.value)
    report = build(source, root, "train", out, tiny_config(), skip_bad=True, progress=False)
    assert report.skipped and all(damaged.name in s for s in report.skipped)
    assert report.conversations > 0


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SourceError, match=r"lvis_v1_val\.json: file not found"):
        read_source("lvis", tmp_path, "val")


def test_refs_pickle_refuses_code(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([Path("x")]))
    with pytest.raises(SourceError, match="refusing"):
        load_refs(path)


def test_rle_of_another_size_is_named_and_skippable(copy, tmp_path):
    """A compressed RLE whose size is not its image's is caught by the reader, with file and
    annotation, instead of failing later in the writer without either."""
    root = copy("lvis")
    path = root / "lvis_v1_train.json"
    data = json.loads(path.read_text())
    ann = data["annotations"][0]
    ann["segmentation"] = encode_mask(np.ones((3, 5), bool))
    path.write_text(json.dumps(data))
    with pytest.raises((SourceError, BuildError), match=rf"id={ann['id']}.*RLE size"):
        build("lvis", root, "train", tmp_path / "out.jsonl", tiny_config(), progress=False)
    report = build(
        "lvis", root, "train", tmp_path / "out.jsonl", tiny_config(), skip_bad=True, progress=False
    )
    assert any("RLE size" in s and path.name in s for s in report.skipped)


@pytest.mark.parametrize(
    ("source", "file", "damage"),
    [
        ("reasonseg", "train/img1.json", lambda d: d["shapes"].append("not a shape")),
        ("visual_genome", "objects.json", lambda d: d[0].update(objects={"not": "a list"})),
    ],
)
def test_wrongly_typed_record_is_a_named_source_error(copy, tmp_path, source, file, damage):
    root = copy(source)
    path = root / file
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    with pytest.raises((SourceError, BuildError), match=re.escape(path.name)):
        build(source, root, "train", tmp_path / "out.jsonl", tiny_config(), progress=False)
