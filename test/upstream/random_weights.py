"""Deterministic weights and inputs shared by the HIPIE-R50 parity tests and the oracle run.

The oracle fixtures (``fixtures/hipie_r50_oracle.npz``) were produced by the authors' code with
exactly these weights and inputs, so our plain-torch HIPIE loaded with ``random_state`` must
reproduce them. Values depend only on a key's name and shape (never on a module's init), so
both implementations get the same tensors whatever order they build their modules in.

Every value is rounded to bfloat16 precision: the released checkpoints are bf16, and upstream
round-trips its decoder through bf16 (``self.decoder.to(torch.bfloat16)``), which is lossless
only for bf16-representable weights.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KEYS_FILE = FIXTURES / "hipie_r50_keys.json"

# Preprocessed (padded, square) input side of the oracle run; upstream uses 1024.
ORACLE_SIZE = 256
# Original test image (h, w); resized longest-side to ORACLE_SIZE, then padded bottom/right.
ORACLE_IMAGE_HW = (120, 160)
TEXT_TOKENS = 8
TEXT_DIM = 768
INPUT_SEED = 18
# nn.Embedding owners (by name suffix): HIPIE queries, BERT lookup tables
EMBEDDING_TABLES = ("tgt_embed", "tgt_embed_bg", "embeddings")
# Heads whose outputs are ranked (two-stage objectness, IoU, text projection of the class
# logits: the unit-normalised tokens are halved before it, hence the larger gain).
# Last controller layer (CondInst params: 8x(8+2), 8x8, 8x1 weights, then biases) and the
# damping of its coordinate rows.
CONTROLLER_OUT = "detr.controller.layers.2."
MASK_CHANNELS = 8
MASK_PARAMS = 169
COORD_DAMPING = 1.0 / 16
SPREAD_HEADS = {"class_embed.6.body.": 10.0, "iou_head.": 3.0, "dot_product_projection_text.": 10.0}


def _generator(key: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def _fan_in(shape: tuple[int, ...]) -> int:
    return max(1, math.prod(shape[1:]))


def _value(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """One tensor, scaled by the role its name and shape give it."""
    g = _generator(key)
    leaf = key.rsplit(".", 1)[-1]

    def normal(std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=g) * std + mean

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(shape, generator=g) * (high - low) + low

    if leaf == "running_var":
        return uniform(0.5, 1.5)
    if leaf == "running_mean":
        return normal(0.1)
    if "sampling_offsets" in key:
        # pixels (encoder) or eighths of a box (decoder): a small spread around the reference
        return normal(0.1 / math.sqrt(_fan_in(shape))) if leaf == "weight" else normal(1.0)
    if "bg_query_refs" in key:
        # used directly as sigmoid-space reference boxes (cx, cy, w, h)
        return uniform(0.2, 0.8)
    if leaf in ("gamma_v", "gamma_l"):
        # fusion layer scale: large enough that the fusion visibly changes the features
        return normal(0.1, mean=0.5)
    owner = key.rsplit(".", 2)[-2] if "." in key else ""
    if leaf == "level_embed" or (leaf == "weight" and owner.endswith(EMBEDDING_TABLES)):
        # learned query / level embeddings and lookup tables: unit-scale rows
        return normal(1.0)
    gain = next((g for head, g in SPREAD_HEADS.items() if head in key), None)
    if leaf == "weight" and gain is not None:
        # score heads: logits spread over several units, so rankings have clear margins
        return normal(gain / math.sqrt(_fan_in(shape)))
    if len(shape) >= 2:
        # conv / linear weights (incl. in_proj_weight): variance-preserving
        return normal(1.0 / math.sqrt(_fan_in(shape)))
    if leaf == "weight":
        # 1-D weights are norm scales: FrozenBN, LayerNorm, GroupNorm
        return normal(0.1, mean=1.0)
    # biases, log_scale, bias0, bias_lang, and any other vector or scalar
    return normal(0.05)


def _damp_coordinate_rows(key: str, value: torch.Tensor) -> torch.Tensor:
    """CondInst controller: damp the generated weights that multiply pixel coordinates.

    The dynamic mask head's first 1x1 conv sees (dx, dy) in pixels (hundreds) next to 8
    feature channels; its weights are the controller outputs o * 10 + c, c in (0, 1). Undamped,
    random masks are half-planes of the coordinates and the mask features would go untested.
    """
    if not key.startswith(CONTROLLER_OUT) or value.shape[0] != MASK_PARAMS:
        return value
    rows = [o * (MASK_CHANNELS + 2) + c for o in range(MASK_CHANNELS) for c in range(2)]
    value[rows] *= COORD_DAMPING
    return value


def _aliases() -> list[tuple[str, str]]:
    return [(a, b) for a, b in json.loads(KEYS_FILE.read_text())["aliases"]]


def random_state(
    shapes: dict[str, tuple[int, ...]],
    aliases: list[tuple[str, str]] | None = None,
) -> dict[str, torch.Tensor]:
    """Float32 (bf16-representable) tensors for ``shapes``; aliased keys get one value.

    ``aliases`` defaults to the pairs in ``fixtures/hipie_r50_keys.json``: for each
    (canonical, alias) pair present in ``shapes``, the alias gets the canonical's tensor.
    """
    state = {
        key: _damp_coordinate_rows(key, _value(key, tuple(shape)))
        .to(torch.bfloat16)
        .to(torch.float32)
        for key, shape in shapes.items()
    }
    for canonical, alias in _aliases() if aliases is None else aliases:
        if canonical in state and alias in state:
            state[alias] = state[canonical]
    return state


class OracleInputs(NamedTuple):
    """The oracle's test inputs."""

    image: np.ndarray  # (h, w, 3) uint8, RGB, ORACLE_IMAGE_HW
    text: torch.Tensor  # (1, TEXT_TOKENS, TEXT_DIM) float32, tokens 0-3 reference, 4-7 target
    size: int  # preprocessed square side (ResizeLongestSide target and padding)


def _test_image() -> np.ndarray:
    """A smooth scene with a few solid shapes and mild noise (structure for the masks)."""
    h, w = ORACLE_IMAGE_HW
    g = torch.Generator().manual_seed(INPUT_SEED)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 - 0.3 * xx * yy], dim=-1)
    for _ in range(4):
        cy, cx = torch.rand(2, generator=g).tolist()
        r = 0.1 + 0.2 * torch.rand(1, generator=g).item()
        colour = torch.rand(3, generator=g)
        inside = ((yy - cy) ** 2 + ((xx - cx) * w / h) ** 2) < r**2
        img[inside] = colour
    y0, x0 = int(0.55 * h), int(0.1 * w)
    img[y0 : y0 + h // 4, x0 : x0 + w // 3] = torch.rand(3, generator=g)
    img = img + 0.03 * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def oracle_inputs() -> OracleInputs:
    """The deterministic test image and the 8 x 768 text tokens (bf16-representable)."""
    g = torch.Generator().manual_seed(INPUT_SEED + 1)
    text = torch.randn((1, TEXT_TOKENS, TEXT_DIM), generator=g)
    text = text.to(torch.bfloat16).to(torch.float32)
    return OracleInputs(image=_test_image(), text=text, size=ORACLE_SIZE)
