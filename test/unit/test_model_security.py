"""A checkpoint is data: loading one never runs Python shipped inside it (issue 16 item 7)."""

from __future__ import annotations

import json

import pytest
import transformers.dynamic_module_utils as dynamic_modules
from helpers import tiny_model

from segllm_ros.runtime.registry import load_runtime

EVIL_CODE = """
from pathlib import Path
Path({marker!r}).write_text("imported")
from transformers import LlamaConfig, LlamaForCausalLM
class EvilConfig(LlamaConfig):
    model_type = "evil_llm"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
"""


def _checkpoint_that_asks_for_remote_code(root, marker):
    """A SegLLM checkpoint whose ``llm`` section points at a folder with a custom model class
    (``auto_map`` -> ``evil.py``) and sets ``trust_remote_code``."""
    llm_dir = root / "llm"
    llm_dir.mkdir()
    (llm_dir / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    (llm_dir / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil_llm",
                "architectures": ["EvilModel"],
                "auto_map": {
                    "AutoConfig": "evil.EvilConfig",
                    "AutoModelForCausalLM": "evil.EvilModel",
                },
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "vocab_size": 64,
            }
        )
    )
    checkpoint = root / "checkpoint"
    tiny_model().save_pretrained(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["llm"] = {"pretrained": str(llm_dir), "trust_remote_code": True}
    (checkpoint / "config.json").write_text(json.dumps(config))
    return checkpoint


def test_checkpoint_config_cannot_enable_trust_remote_code(tmp_path, monkeypatch):
    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    marker = tmp_path / "marker"
    checkpoint = _checkpoint_that_asks_for_remote_code(tmp_path, marker)
    error = None
    try:
        load_runtime(str(checkpoint))
    except (ValueError, OSError) as err:  # before the fix: OSError after running evil.py
        error = err
    assert not marker.exists(), "loading the checkpoint imported Python from its folder"
    assert isinstance(error, ValueError) and "trust_remote_code" in str(error)


def test_only_allow_listed_keys_reach_from_pretrained(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    tiny_model().save_pretrained(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["llm"] = {"pretrained": str(tmp_path), "code_revision": "main"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"code_revision.*allowed.*gguf_file"):
        load_runtime(str(checkpoint))
