"""The miss diagnostics behind the README's account of the demo model's errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from helpers import DEMO_MODEL, tiny_model

from segllm_ros.model.segllm import SegLLMModel
from segllm_training.shape_probe import _miss_kind, linear_probe_accuracy, miss_kinds, round_kinds
from segllm_training.tabletop_eval import held_out


def test_linear_probe_reads_a_linear_code_and_not_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 600)
    coded = np.eye(4)[labels] @ rng.normal(size=(4, 16)) + 0.1 * rng.normal(size=(600, 16))
    assert linear_probe_accuracy(coded, labels) > 0.95
    assert linear_probe_accuracy(rng.normal(size=(600, 16)), labels) < 0.45


def test_misses_are_named_by_what_else_the_mask_covers():
    def obj(color, shape):
        return SimpleNamespace(color=color, shape=shape)

    target = obj("red", "triangle")
    assert _miss_kind(target, [obj("red", "square")]) == "same colour, other shape"
    assert _miss_kind(target, [obj("red", "triangle")]) == "twin"
    assert _miss_kind(target, [obj("blue", "triangle")]) == "other object"
    assert _miss_kind(target, []) == "target missed or cut"


def test_miss_count_covers_every_scored_round():
    report = miss_kinds(tiny_model(seed=0).eval(), n=3)
    assert report["rounds"] == sum(min(len(c.rounds), 5) for c in held_out(3))
    assert sum(report["by_kind"].values()) == report["misses"] <= report["rounds"]
    assert report["misses"] > 0  # an untrained model misses


def test_round_kinds_score_every_round_once_by_its_kind():
    model = tiny_model(seed=0)
    report = round_kinds(model, n=4, batch_size=3)
    convs = held_out(4)
    assert sum(k["rounds"] for k in report.values()) == sum(len(c.rounds) for c in convs)
    kinds = {r.kind for c in convs for r in c.rounds}
    assert {k.split(",")[0] for k in report} == kinds
    for stats in report.values():
        assert 0.0 <= stats["mean_iou"] <= 1.0 and 0.0 <= stats["under_0.5"] <= 1.0


def test_round_kinds_put_each_score_on_its_own_round():
    """A misaligned round/score pairing would smear the trained model's near-perfect "again"
    rounds (it copies the referenced mask) with the other kinds' scores."""
    report = round_kinds(SegLLMModel.from_pretrained(DEMO_MODEL), n=8, batch_size=3)
    again = [v for k, v in report.items() if k.startswith("again")]
    assert again and all(v["mean_iou"] > 0.95 for v in again)
