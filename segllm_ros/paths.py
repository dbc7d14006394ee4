"""Where the bundled files (demo model, demo frames) are, however the package was installed."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "segllm_ros"


def share_candidates() -> list[Path]:
    """Source checkout first, then the install prefixes (pip into a venv, colcon)."""
    candidates = [Path(__file__).resolve().parents[1], Path(sys.prefix) / "share" / PACKAGE]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # not on an ament index: pip install without a ROS environment
        pass
    return candidates


def find_share_file(relative: str) -> Path:
    for base in share_candidates():
        if (base / relative).exists():
            return base / relative
    raise FileNotFoundError(f"{relative} not found in {[str(c) for c in share_candidates()]}")


def default_model_path() -> Path:
    """The bundled demo checkpoint."""
    return find_share_file("models/demo")
