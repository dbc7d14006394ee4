"""Nested YAML data merged key by key: how a recipe stage extends its base and how overrides
reach one switch inside a config section without restating the section."""

from __future__ import annotations

from typing import Any


def merged(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``: mappings merge recursively, anything else (lists
    included) is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merged(base.get(key), value)
        return out
    return over
