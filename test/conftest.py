"""Shared pytest setup.

Tests run against the source tree: the repository root goes first on ``sys.path`` and
``training/`` is registered as ``segllm_training`` exactly as the packaging maps it. The
compiled interfaces (``segllm_ros.msg``/``.srv``/``.action``) come from the installed package
(``make install``), merged in by ``segllm_ros.__init__``'s ``extend_path``.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if "segllm_training" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "segllm_training",
        ROOT / "training" / "__init__.py",
        submodule_search_locations=[str(ROOT / "training")],
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["segllm_training"] = _module
    _spec.loader.exec_module(_module)

# DDS stays on loopback, on a domain no other run uses.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 199)))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled demo model exported to ONNX once per test session (about 10 s)."""
    from segllm_ros.export import export_checkpoint

    out = tmp_path_factory.mktemp("demo_onnx")
    export_checkpoint(ROOT / "models" / "demo", out)
    return out
