"""The released-folder reader: index + shards (safetensors or .bin), headers-only dry run,
key-for-key check with an ignore list and aliases, then the tensors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from segllm_ros.model.released.checkpoint import (
    CheckpointSpec,
    check_keys,
    load_tensors,
    read_layout,
)

SHAPES = {
    "model.embed_tokens.weight": (11, 4),
    "model.layers.0.mlp.weight": (4, 4),
    "model.segmentator.hipie.detr.class_embed.0.weight": (3, 4),
    "model.segmentator.hipie.detr.transformer.decoder.class_embed.0.weight": (3, 4),
    "model.segmentator.hipie.text_encoder.bert.pooler.weight": (2, 2),
    "lm_head.weight": (11, 4),
}
ALIAS = (
    "model.segmentator.hipie.detr.class_embed.0.weight",
    "model.segmentator.hipie.detr.transformer.decoder.class_embed.0.weight",
)
IGNORE = ("model.segmentator.hipie.text_encoder.*",)


def stored_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {k: torch.randn(s, generator=g).to(torch.bfloat16) for k, s in SHAPES.items()}
    out[ALIAS[1]] = out[ALIAS[0]].clone()
    return out


def write_sharded(folder: Path, tensors: dict[str, torch.Tensor], shards: int = 3) -> Path:
    """A folder laid out like the release: N safetensors shards + the index."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in names[i::shards]}
        save_file(part, str(folder / file))
        weight_map.update(dict.fromkeys(part, file))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def spec(shapes: dict[str, tuple[int, ...]] | None = None) -> CheckpointSpec:
    expected = {k: v for k, v in (shapes or SHAPES).items() if not k.startswith(IGNORE[0][:-1])}
    rename = {k: k.removeprefix("model.").replace("segmentator.hipie.", "hipie.") for k in expected}
    return CheckpointSpec(expected, rename, IGNORE, (ALIAS,))


def test_upstream_layout_is_read_from_headers_with_shapes_dtypes_and_shards(tmp_path):
    folder = write_sharded(tmp_path / "released", stored_tensors())
    layout = read_layout(folder)
    assert set(layout) == set(SHAPES)
    assert {info.dtype for info in layout.values()} == {"bfloat16"}
    assert len({info.file for info in layout.values()}) == 3
    assert layout["lm_head.weight"].shape == (11, 4)
    assert layout["lm_head.weight"].nbytes == 11 * 4 * 2


def test_upstream_dry_run_reports_a_fitting_folder_as_loadable(tmp_path):
    folder = write_sharded(tmp_path / "released", stored_tensors())
    report = spec().check(folder)
    assert report.ok, report.summary()
    assert report.ignored == ["model.segmentator.hipie.text_encoder.bert.pooler.weight"]
    assert report.stored == len(SHAPES) and report.expected == len(SHAPES) - 1
    assert report.dtypes == {"bfloat16": len(SHAPES)}
    assert "OK" in report.summary()


def test_upstream_dry_run_names_missing_unexpected_and_wrong_shapes(tmp_path):
    tensors = stored_tensors()
    del tensors["lm_head.weight"]
    tensors["model.extra.weight"] = torch.zeros(1)
    tensors["model.embed_tokens.weight"] = torch.zeros(12, 4)  # a vocabulary of another size
    report = spec().check(write_sharded(tmp_path / "released", tensors))
    assert not report.ok
    assert report.missing == ["lm_head.weight"]
    assert report.unexpected == ["model.extra.weight"]
    assert report.shape_mismatches == [("model.embed_tokens.weight", (11, 4), (12, 4))]
    text = report.summary()
    assert "missing: 1" in text and "unexpected: 1" in text and "NOT LOADABLE" in text


def test_upstream_load_renames_casts_and_refuses_a_folder_that_does_not_fit(tmp_path):
    tensors = stored_tensors()
    folder = write_sharded(tmp_path / "released", tensors)
    state = spec().load(folder, dtype=torch.float32)
    assert set(state) == set(spec().rename.values())
    assert state["lm_head.weight"].dtype == torch.float32
    assert torch.equal(state["lm_head.weight"], tensors["lm_head.weight"].float())
    assert "hipie.detr.class_embed.0.weight" in state

    bad = dict(tensors)
    del bad["model.layers.0.mlp.weight"]
    with pytest.raises(ValueError, match="missing: 1"):
        spec().load(write_sharded(tmp_path / "bad", bad))


def test_upstream_alias_pairs_must_hold_one_tensor(tmp_path):
    tensors = stored_tensors()
    tensors[ALIAS[1]] = tensors[ALIAS[1]] + 1
    with pytest.raises(ValueError, match="alias pairs hold different values"):
        spec().load(write_sharded(tmp_path / "released", tensors))
    shapes = dict(SHAPES)
    shapes[ALIAS[1]] = (4, 3)
    report = check_keys(shapes, read_layout(tmp_path / "released"), IGNORE, (ALIAS,))
    assert report.alias_mismatches == [] and report.shape_mismatches  # stored ones agree
    tensors[ALIAS[1]] = torch.zeros(4, 3)
    report = spec().check(write_sharded(tmp_path / "other", tensors))
    assert report.alias_mismatches == [ALIAS]


def test_upstream_half_downloaded_folders_fail_with_the_reason(tmp_path):
    folder = write_sharded(tmp_path / "released", stored_tensors())
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"00002-of-00003\.safetensors, which is absent"):
        read_layout(folder)
    with pytest.raises(FileNotFoundError, match="no weights"):
        read_layout(tmp_path)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.ghost.weight"] = "model-00001-of-00003.safetensors"
    write_sharded(folder, stored_tensors())
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="does not hold"):
        read_layout(folder)


class _RunsCode:
    """A pickle payload that would create a file if unpickled with full pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_upstream_bin_checkpoints_load_without_running_pickled_code(tmp_path):
    tensors = {k: v.float() for k, v in stored_tensors().items()}
    folder = tmp_path / "bin"
    folder.mkdir()
    torch.save(tensors, folder / "pytorch_model.bin")
    layout = read_layout(folder)
    assert set(layout) == set(SHAPES) and layout["lm_head.weight"].dtype == "float32"
    loaded = load_tensors(folder, ["lm_head.weight"], layout)
    assert torch.equal(loaded["lm_head.weight"], tensors["lm_head.weight"])

    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "code-ran"
    torch.save(
        {"lm_head.weight": torch.zeros(1), "x": _RunsCode(marker)}, evil / "pytorch_model.bin"
    )
    with pytest.raises(pickle.UnpicklingError):
        read_layout(evil)
    assert not marker.exists()
