"""Shared pytest setup.

Tests are grouped by folder, and each folder is a marker (``pytest -m ros``, ``-m "not
training"``): ``unit`` (plain-Python engine, codecs, model and runtime on tiny real models),
``ros`` (the node and the demo over real DDS, the launch file), ``training`` (data, trainer,
evaluation; they show learning), ``mrseg`` (the dataset generator), ``deploy`` (ONNX, TensorRT,
packaging, benchmark scripts), ``upstream`` (the authors' released model family, against
their code).

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


GROUPS = ("unit", "ros", "training", "mrseg", "deploy", "upstream")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its folder's group."""
    for item in items:
        group = Path(item.path).relative_to(ROOT / "test").parts[0]
        if group in GROUPS:
            item.add_marker(getattr(pytest.mark, group))
