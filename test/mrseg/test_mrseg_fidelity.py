"""Issue 19: the rules where the generator followed the SegLLM appendix loosely, each measured
the way the audit measured it (a count or a share on files in the real formats)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from mrseg_data import SOURCE_DIRS, TINY_SAM, write_all
from PIL import Image

from segllm_training.mrseg import fixtures as fx
from segllm_training.mrseg.build import build, read_source
from segllm_training.mrseg.cli import main
from segllm_training.mrseg.config import BuildConfig
from segllm_training.mrseg.schema import read_conversations

LVIS_SPELLINGS_OF_COCO = {
    "car_(automobile)": "car.n.01",
    "bus_(vehicle)": "bus.n.01",
    "train_(railroad_vehicle)": "train.n.01",
    "necktie": "necktie.n.01",
    "ski": "ski.n.01",
    "ball": "ball.n.06",
    "wineglass": "wineglass.n.01",
    "orange_(fruit)": "orange.n.01",
    "doughnut": "doughnut.n.02",
    "sofa": "sofa.n.01",
    "flowerpot": "pot.n.04",
    "television_set": "television_receiver.n.01",
    "laptop_computer": "laptop.n.01",
    "mouse_(computer_equipment)": "mouse.n.04",
    "remote_control": "remote_control.n.01",
    "computer_keyboard": "computer_keyboard.n.01",
    "cellular_telephone": "cellular_telephone.n.01",
    "microwave_oven": "microwave.n.02",
    "fireplug": "fireplug.n.01",
    "hair_dryer": "hand_blower.n.01",
}
"""The 20 COCO classes LVIS v1 spells differently, with their LVIS ``synset`` (issue 19.2)."""
LVIS_ONLY = {
    "bow_(weapon)": "bow.n.04",
    "teapot": "teapot.n.01",
    "drum_(musical_instrument)": "drum.n.01",
    "kettle": "kettle.n.01",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("mrseg"))


def test_lvis_drops_the_coco_classes_it_spells_differently(tmp_path):
    """19.2: before, all 20 got in (exclusion by literal COCO name); now none, and queries
    read the LVIS name without its sense qualifier ("bow", not "bow (weapon)")."""
    names = list(LVIS_SPELLINGS_OF_COCO) + list(LVIS_ONLY)
    lvis = fx.coco_dict(np.random.default_rng(0), 80, tuple(names), per_image=(6, 14))
    synsets = LVIS_SPELLINGS_OF_COCO | LVIS_ONLY
    for cat in lvis["categories"]:
        cat.update(synonyms=[cat["name"]], synset=synsets[cat["name"]], frequency="c")
    for img in lvis["images"]:
        img["coco_url"] = f"http://images.cocodataset.org/train2017/{img.pop('file_name')[-16:]}"
    (tmp_path / "lvis_v1_train.json").write_text(json.dumps(lvis))
    build("lvis", tmp_path, "train", tmp_path / "out.jsonl", progress=False)
    name_of = {c["id"]: c["name"] for c in lvis["categories"]}
    category = {a["id"]: name_of[a["category_id"]] for a in lvis["annotations"]}
    used = Counter(
        category[r.annotation_id]
        for rec in read_conversations(tmp_path / "out.jsonl")
        for r in rec.rounds
    )
    assert not set(used) & set(LVIS_SPELLINGS_OF_COCO)  # before: 20 of 20 got in
    assert set(used) == set(LVIS_ONLY)
    queries = [r.query for rec in read_conversations(tmp_path / "out.jsonl") for r in rec.rounds]
    assert any(q.startswith("the bow") for q in queries)
    assert any(q.startswith("the drum") for q in queries)
    assert not any("(" in q or "_" in q for q in queries)
    # a file without synsets: the name without its qualifier, or a synonym, still maps
    from segllm_training.mrseg.readers.coco import is_coco_class

    assert is_coco_class({"name": "car_(automobile)", "synonyms": []})
    assert is_coco_class({"name": "lounge", "synonyms": ["sofa", "couch"]})
    assert not is_coco_class({"name": "bow_(weapon)", "synonyms": ["bow_(weapon)"]})


def test_attributes_coco_is_single_round(data, tmp_path):
    """19.3: Table A1 has max rounds 1 (before: 1-4-round conversations, 3 on the fixture)."""
    out = tmp_path / "attr.jsonl"
    build("attributes_coco", data / "coco", "train", out, progress=False)
    records = read_conversations(out)
    per_image = Counter(r.image for r in records)
    assert {len(r.rounds) for r in records} == {1}
    assert max(per_image.values()) > 1 and all(1 <= v <= 4 for v in per_image.values())
    assert len({r.rounds[0].annotation_id for r in records}) == len(records)


def test_reasonseg_train_has_one_conversation_per_text(data, tmp_path):
    """19.5: train gives one conversation per (image, text) (before: one per image);
    val keeps one per image."""
    for split in ("train", "val"):
        entries, _ = read_source("reasonseg", data / "reasonseg", split)
        out = tmp_path / f"{split}.jsonl"
        build("reasonseg", data / "reasonseg", split, out, progress=False)
        records = read_conversations(out)
        if split == "train":
            texts = sum(len(e.texts) for e in entries)
            assert texts > len(entries) and len(records) == texts
            said = sorted(
                (r.image, r.rounds[0].query if e.is_sentence else r.rounds[0].caption)
                for r, e in zip(records, (e for e in entries for _ in e.texts), strict=True)
            )
            assert said == sorted((e.file_name, t) for e in entries for t in e.texts)
        else:
            assert len(records) == len(entries)


def test_semantic_sources_give_three_conversations_per_image(tmp_path):
    """19.9: Table A1 has 2.9-3.0 conversations per image: min(3, classes present)
    (before: min(4, ...))."""
    for source, folder in (("ade20k", "ade"), ("cocostuff", "cocostuff")):
        labels = fx.write_semantic(
            tmp_path / folder, np.random.default_rng(3), source, n_images=8, per_image=6
        )
        out = tmp_path / f"{source}.jsonl"
        build(source, tmp_path / folder, "train", out, progress=False)
        per_image = Counter(Path(r.image).stem for r in read_conversations(out))
        void = 0 if source == "ade20k" else 255
        present = {}
        for png in labels.glob("*.png"):
            values, counts = np.unique(np.asarray(Image.open(png)), return_counts=True)
            present[png.stem] = sum(
                1
                for v, c in zip(values, counts, strict=True)
                if v != void and c >= BuildConfig().min_area
            )
        assert max(present.values()) >= 4  # where 4 and 3 differ
        assert per_image == {k: min(3, v) for k, v in present.items()}


def test_visual_genome_has_a_deterministic_val_split(tmp_path):
    """19.6: before, every split but train was refused."""
    fx.write_visual_genome(tmp_path / "vg", np.random.default_rng(0), n_images=80)
    split_ids = {}
    for split in ("train", "val"):
        entries, _ = read_source("visual_genome", tmp_path / "vg", split)
        again, _ = read_source("visual_genome", tmp_path / "vg", split)
        assert [e.image_id for e in entries] == [e.image_id for e in again]
        assert all(e.split == split for e in entries)
        split_ids[split] = {e.image_id for e in entries}
    assert not split_ids["train"] & split_ids["val"]
    assert split_ids["train"] | split_ids["val"] == set(range(1, 81))
    assert 2 <= len(split_ids["val"]) <= 16  # 10% of 80, within sampling noise
    half, _ = read_source(
        "visual_genome", tmp_path / "vg", "val", cfg=BuildConfig(visual_genome_val_share=0.5)
    )
    assert split_ids["val"] < {e.image_id for e in half}


def test_visual_genome_refuses_random_sam(data, tmp_path, capsys):
    """19.7: before, VG masks came silently from random weights without a checkpoint."""
    out = tmp_path / "vg.jsonl"
    with pytest.raises(ValueError, match="--sam-checkpoint"):
        build(
            "visual_genome",
            data / "vg",
            "train",
            out,
            BuildConfig(sam_config=dict(TINY_SAM)),
            progress=False,
        )
    assert not out.exists()
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"sam_config": TINY_SAM}))
    args = [
        "build",
        "--source",
        "visual_genome",
        "--root",
        str(data / SOURCE_DIRS["visual_genome"]),
        "--split",
        "train",
        "--out",
        str(out),
        "--config",
        str(config),
        "--no-progress",
    ]
    assert main(args) == 2
    assert "--allow-random-sam" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--sam-checkpoint", str(tmp_path / "none.pth")]) == 2
    assert "none.pth not found" in capsys.readouterr().err
    assert main([*args, "--allow-random-sam"]) == 0
    random_masks = [r.mask for rec in read_conversations(out) for r in rec.rounds]
    # a checkpoint is what the masks come from: other weights, other masks
    from segllm_ros.model.config import SamConfig
    from segllm_ros.model.sam import build_sam

    torch.manual_seed(7)
    torch.save(build_sam(SamConfig(**TINY_SAM)).state_dict(), tmp_path / "sam.pth")
    assert main([*args, "--sam-checkpoint", str(tmp_path / "sam.pth")]) == 0
    loaded = [r.mask for rec in read_conversations(out) for r in rec.rounds]
    assert len(loaded) == len(random_masks) and loaded != random_masks
