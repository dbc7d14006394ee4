"""Loading a released-style folder as family "segllm-hipie": the config the authors' code
writes (``model_type: "llava"``) is recognised and parsed, every stored tensor lands in our
module tree key for key (shared HIPIE modules stay shared), unused stored tensors are declared,
the CLIP tower comes from the weights or from its own folder, and a dry run needs no weights."""

from __future__ import annotations

import json

import pytest
import torch
from released_folder import UNUSED, base_tokenizer, tiny_tokenizer, write_released_folder

from segllm_ros.model.family import checkpoint_family, load_pretrained
from segllm_ros.model.released.checkpoint import load_tensors, read_layout
from segllm_ros.model.released.config import ADDED_TOKENS, ReleasedConfig
from segllm_ros.model.released.model import TOWER_PREFIX, ReleasedSegLLM
from segllm_ros.model.released.tokens import add_released_tokens


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    return write_released_folder(tmp_path_factory.mktemp("release"), seed=5)


def test_upstream_family_loads_key_for_key(folder) -> None:
    assert checkpoint_family(folder) == "segllm-hipie"  # from model_type "llava"
    model = load_pretrained(folder)
    assert isinstance(model, ReleasedSegLLM) and not model.training
    names = model.checkpoint_names()
    stored = load_tensors(folder, names)
    own = model.state_dict()
    assert set(names.values()) == set(own)
    for theirs, ours in names.items():
        assert own[ours].dtype == torch.bfloat16, ours
        assert torch.equal(own[ours], stored[theirs]), ours
    # HIPIE's shared heads are stored twice and stay one tensor here
    pairs = model.aliases()
    assert pairs
    for a, b in pairs:
        assert own[names[a]].data_ptr() == own[names[b]].data_ptr()


def test_upstream_family_dry_run_needs_no_weights(folder) -> None:
    config = ReleasedConfig.load(folder)
    meta = ReleasedSegLLM.meta(config)
    assert all(t.is_meta for t in meta.state_dict().values())
    report = meta.checkpoint_spec().check(folder)
    assert report.ok, report.summary()
    assert ReleasedSegLLM.dry_run(folder).summary() == report.summary()
    assert report.ignored == sorted(UNUSED)
    data = json.loads((folder / "config.json").read_text())
    deeper = ReleasedSegLLM.meta(ReleasedConfig.from_released({**data, "num_hidden_layers": 3}))
    report = deeper.checkpoint_spec().check(folder)
    assert not report.ok and "model.layers.2.mlp.up_proj.weight" in report.missing


def test_upstream_family_tower_from_its_folder(folder, tmp_path) -> None:
    """Weights without the CLIP tower: it loads from ``mm_vision_tower``'s folder, to the
    same values."""
    split = write_released_folder(tmp_path, seed=5, tower_in_weights=False)
    assert not any(k.startswith(TOWER_PREFIX) for k in read_layout(split))
    full, tower_apart = load_pretrained(folder), load_pretrained(split)
    a, b = full.state_dict(), tower_apart.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bf16 throughout, as stored


def test_upstream_family_config_and_tokens(folder) -> None:
    data = json.loads((folder / "config.json").read_text())
    with pytest.raises(ValueError, match="model_type"):
        ReleasedConfig.from_released({**data, "model_type": "llava_llama"})
    with pytest.raises(ValueError, match="mm_projector_type"):
        ReleasedConfig.from_released({**data, "mm_projector_type": "linear"})
    # a release that did not save the added tokens gets them, in upstream's order
    tok = base_tokenizer()
    base = len(tok)
    add_released_tokens(tok)
    assert len(tok) == base + len(ADDED_TOKENS)
    assert tok.convert_tokens_to_ids(["<video>", "<seg>"]) == [base + 6, base + 9]  # 32006, 32009
    assert tiny_tokenizer().get_vocab() == tok.get_vocab()  # as the release saved them
    add_released_tokens(tok)  # idempotent
    assert len(tok) == base + len(ADDED_TOKENS)
    partial = base_tokenizer()
    partial.add_tokens(["<seg>"], special_tokens=True)
    with pytest.raises(ValueError, match="some of upstream's added tokens"):
        add_released_tokens(partial)
