"""The bundled demo model on 50 held-out tabletop conversations, through the inference
engine, with the model's own earlier outputs as references (nothing from ground truth is fed
back). Blanking the references must ruin the twin choice: that proves they are used."""

from __future__ import annotations

import pytest
from helpers import DEMO_MODEL

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine
from segllm_ros.model.segllm import SegLLMModel
from segllm_training.tabletop_eval import evaluate, held_out


@pytest.fixture(scope="module")
def reports():
    model = SegLLMModel.from_pretrained(DEMO_MODEL)
    data = held_out(50)
    return {blank: evaluate(SegLLMEngine(model, EngineConfig(blank_references=blank)), data)
            for blank in (False, True)}


def test_demo_model_quality_with_its_own_references(reports):
    report = reports[False]
    print("with references:", report.summary())
    assert report.twin_total >= 30   # enough rounds that only a reference disambiguates
    assert report.mean_iou(range(1, 2)) >= 0.85
    assert report.mean_iou(range(1, 6)) >= 0.85
    assert report.twin_choice >= 0.95


def test_demo_model_twin_choice_falls_without_references(reports):
    print("references blanked:", reports[True].summary())
    assert reports[True].twin_choice <= 0.60
