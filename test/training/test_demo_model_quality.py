"""The bundled demo model on 50 held-out tabletop conversations, through the inference
engine, with the model's own earlier outputs as references (nothing from ground truth is fed
back).

The issue-2 bar: twin choice >= 95%, and <= 60% with the references blanked; round-1 IoU
>= 0.85 and mean IoU rounds 1-5 >= 0.85. The named-object guard catches a broken or untrained
bundled model.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DEMO_MODEL, tiny_model

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine
from segllm_ros.engine.history import Frame
from segllm_ros.interface.mask_codec import mask_iou
from segllm_ros.model.segllm import SegLLMModel
from segllm_training.eval.answer_kinds import evaluate_answer_kinds, held_out_kinds
from segllm_training.eval.tabletop_eval import evaluate, held_out


@pytest.fixture(scope="module")
def model():
    return SegLLMModel.from_pretrained(DEMO_MODEL)


@pytest.fixture(scope="module")
def data():
    return held_out(50)


@pytest.fixture(scope="module")
def reports(model, data):
    """(with references, references blanked) on the same conversations."""
    report = evaluate(SegLLMEngine(model), data)
    blanked = evaluate(SegLLMEngine(model, EngineConfig(blank_references=True)), data)
    print("with references:", report.summary())
    print("references blanked:", blanked.summary())
    return report, blanked


def test_demo_model_tells_twins_apart_through_its_own_earlier_outputs(reports):
    """The issue's twin bar: >= 95% right twin on rounds only an earlier output resolves,
    and <= 60% once the references are blanked (so they are what is used)."""
    report, blanked = reports
    assert report.twin_total >= 30
    assert report.twin_choice >= 0.95
    assert blanked.twin_choice <= 0.60


def test_demo_model_meets_the_issue_iou_bar(reports):
    report, _ = reports
    assert report.mean_iou(range(1, 2)) >= 0.85
    assert report.mean_iou(range(1, 6)) >= 0.85


def named_object_iou(model, data) -> tuple[float, int]:
    """Mean IoU on rounds that name an object unique in the scene ("the purple circle")."""
    engine = SegLLMEngine(model)
    ious = []
    for n, conv in enumerate(data):
        frame = Frame.create(conv.scene.image, n + 1, "table")
        for rnd in conv.rounds:
            if rnd.kind == "describe" and conv.scene.name_is_unique(rnd.target):
                result = engine.segment(f"named-{n}", rnd.query, frame)
                ious.append(mask_iou(result.mask, conv.scene.target_mask(rnd.target)))
                engine.reset(f"named-{n}")
    return float(np.mean(ious)), len(ious)


def test_demo_model_segments_named_objects(model, data):
    """The bundled model finds named objects, far above the same architecture untrained
    (measured in the same run, so the number quoted in notes comes from here)."""
    trained, count = named_object_iou(model, data)
    untrained, _ = named_object_iou(tiny_model(seed=0).eval(), data)
    print(
        f"named objects: mean IoU {trained:.3f} trained, {untrained:.3f} untrained ({count} rounds)"
    )
    assert count >= 30
    assert trained >= 0.6 and untrained < 0.2


def test_demo_model_meets_the_ambiguity_bars(model):
    """Issue 17's bars on 60 held-out conversations with every kind of round, own outputs as
    history: AMBIGUOUS with every candidate covered >= 90% (false AMBIGUOUS <= 5%), MANY with
    the exact count >= 90% and union IoU >= 0.85, NOT_FOUND >= 90% for absent objects (false
    NOT_FOUND <= 5%), replies to "which one?" resolved to the chosen object >= 95%."""
    report = evaluate_answer_kinds(SegLLMEngine(model), held_out_kinds(60))
    summary = report.summary()
    print("answer kinds:", summary)
    assert min(summary[k] for k in ("ambiguous_n", "many_n", "none_n", "clarify_n")) >= 15
    assert report.failed_bars() == {}
