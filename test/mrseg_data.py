"""Shared MRSeg test data: every source written in its real format into one folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segllm_training.mrseg import fixtures as fx
from segllm_training.mrseg.config import BuildConfig

TINY_SAM = dict(
    image_encoder="vit",
    image_size=64,
    patch_size=16,
    encoder_embed_dim=32,
    encoder_depth=1,
    encoder_num_heads=2,
    encoder_global_attn_indexes=[0],
    encoder_window_size=2,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
    mask_in_chans=8,
)

SOURCE_DIRS = {
    "refcoco": "refcoco",
    "refcoco+": "refcoco",
    "refcocog": "refcocog",
    "mrseg_hard": "refcoco",
    "lvis": "lvis",
    "paco_lvis": "paco",
    "visual_genome": "vg",
    "pascal_part": "ppp",
    "ade20k": "ade",
    "cocostuff": "cocostuff",
    "reasonseg": "reasonseg",
    "attributes_coco": "coco",
}


def tiny_config(**overrides) -> BuildConfig:
    """The tiny SAM with random weights (no checkpoint exists here)."""
    return BuildConfig(sam_config=dict(TINY_SAM), allow_random_sam=True, **overrides)


def write_all(root: Path, seed: int = 0, n: int = 9) -> Path:
    """All twelve sources (train split; plus val where the format has one) under ``root``."""
    rng = np.random.default_rng(seed)
    fx.write_refer(root / "refcoco", rng, n)
    fx.write_refer(root / "refcocog", rng, n, umd=True)
    for split in ("train", "val"):
        fx.write_lvis(root / "lvis", rng, split, n)
        fx.write_paco(root / "paco", rng, split, n)
        fx.write_pascal_part(root / "ppp", rng, split, 3)
        fx.write_semantic(root / "ade", rng, "ade20k", split)
        fx.write_semantic(root / "cocostuff", rng, "cocostuff", split)
        fx.write_reasonseg(root / "reasonseg", rng, split)
        path = fx.write_coco_instances(root / "coco", rng, split, 3)
        ids = [a["id"] for a in json.loads(path.read_text())["annotations"]]
        (root / "coco" / f"attributes_{split}2017.json").write_text(
            json.dumps(
                {
                    str(i): {"description": f"striped blue object {i}", "class_name": "mug"}
                    for i in ids
                }
            )
        )
    fx.write_visual_genome(root / "vg", rng)
    return root
