"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest
from helpers import DEMO_MODEL

from segllm_ros.model.segllm import SegLLMModel


@pytest.fixture(scope="module")
def model() -> SegLLMModel:
    """The bundled demo model (trained: its masks mean something), loaded once per module."""
    return SegLLMModel.from_pretrained(DEMO_MODEL)
