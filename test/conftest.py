"""Shared pytest setup.

Tests run against the source tree: pytest's ``pythonpath`` (pyproject.toml) puts the repository
root and ``training/`` (which holds the ``segllm_training`` package) first on ``sys.path``. The
compiled interfaces (``segllm_ros.msg``/``.srv``/``.action``) come from the installed package
(``make install``), merged in by ``segllm_ros.__init__``'s ``extend_path``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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
