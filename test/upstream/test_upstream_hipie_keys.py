"""HIPIE-R50's state dict matches the authors' module tree key for key (contract 1: the
oracle's recorded key list), so the released checkpoint loads without renaming."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

import torch

from segllm_ros.model.hipie import HipieR50

KEYS = Path(__file__).parent / "fixtures" / "hipie_r50_keys.json"


def test_upstream_hipie_keys_and_shapes() -> None:
    spec = json.loads(KEYS.read_text())
    expected = {
        name: (tuple(shape), dtype)
        for name, (shape, dtype) in spec["keys"].items()
        if not any(fnmatch(name, pattern) for pattern in spec["ignored"])
    }
    state = HipieR50().state_dict()
    got = {name: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in state.items()}
    assert sorted(set(expected) - set(got)) == []  # missing
    assert sorted(set(got) - set(expected)) == []  # unexpected
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


def test_upstream_hipie_aliases_share_storage() -> None:
    """Upstream's shared heads (``detr.detr.{class,bbox}_embed`` also registered under the
    decoder) are one tensor here too: writing one name changes the other."""
    spec = json.loads(KEYS.read_text())
    model = HipieR50()
    state = model.state_dict()
    assert spec["aliases"]
    for a, b in spec["aliases"]:
        assert state[a].data_ptr() == state[b].data_ptr(), (a, b)
    a, b = spec["aliases"][0]
    with torch.no_grad():
        state[a].add_(1.0)
    assert torch.equal(model.state_dict()[b], state[a])
