"""Make a bench script import this checkout: ``from source_tree import use_source_tree``.

The checkout's root (``segllm_ros``) and ``training/`` (``segllm_training``) go first on
``sys.path``, as pytest's ``pythonpath`` puts them for the tests, so benchmarks and the GPU
check run the code next to this file, not a copy installed into the venv by ``make install``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_PATHS = (ROOT, ROOT / "training")


def use_source_tree(extra: list[Path] = ()) -> None:
    """Put the checkout (and ``extra`` folders, e.g. carried dependencies) first on the
    path."""
    for path in [*extra, *reversed(SOURCE_PATHS)]:
        if path.is_dir():
            sys.path.insert(0, str(path))
