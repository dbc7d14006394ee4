"""Run a module of this checkout: ``python bench/source_tree.py MODULE [ARGS...]``.

``training/`` is imported as ``segllm_training`` and the checkout goes first on ``sys.path``
(as ``test/conftest.py`` maps them), so subprocesses, ``torchrun`` workers and the GPU check
run the code next to this file, not a copy installed into the venv by ``make install``.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def use_source_tree(extra: list[Path] = ()) -> None:
    """Put the checkout (and ``extra`` folders, e.g. carried dependencies) first on the path
    and register ``segllm_training``."""
    for path in [*extra, ROOT]:
        if path.is_dir():
            sys.path.insert(0, str(path))
    if "segllm_training" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "segllm_training", ROOT / "training" / "__init__.py",
            submodule_search_locations=[str(ROOT / "training")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["segllm_training"] = module
        spec.loader.exec_module(module)


if __name__ == "__main__":
    use_source_tree()
    module_name, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module_name, run_name="__main__", alter_sys=True)
