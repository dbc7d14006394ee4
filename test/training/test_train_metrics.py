"""Per-round metrics against hand-computed cIoU/gIoU, the Table-A4-shaped table, and the
evaluation CLI end to end (a real checkpoint, an MRSeg file, the engine, both protocols)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from train_helpers import tiny_config

from segllm_training.eval.evaluate import Report, RoundOutcome, main, report_rows, table
from segllm_training.mrseg.schema import (
    ConversationRecord,
    RoundRecord,
    encode_mask,
    write_conversations,
)
from segllm_training.trainer.build import ModelSource, build_model, export_checkpoint


def _mask(cells: list[tuple[int, int]]) -> np.ndarray:
    m = np.zeros((4, 4), bool)
    for y, x in cells:
        m[y, x] = True
    return m


def test_ciou_and_giou_against_hand_computation():
    report = Report()
    # round 1: sample A  |P|=2, |T|=2, overlap 1 -> I=1, U=3;   sample B: exact, I=U=4
    report.add("refcoco", "val", RoundOutcome(1, _mask([(0, 0), (0, 1)]), _mask([(0, 1), (0, 2)])))
    report.add(
        "refcoco",
        "val",
        RoundOutcome(
            1, _mask([(1, 0), (1, 1), (1, 2), (1, 3)]), _mask([(1, 0), (1, 1), (1, 2), (1, 3)])
        ),
    )
    # round 2: prediction empty, truth 1 px -> I=0, U=1; plus an empty/empty pair (IoU 1)
    report.add("refcoco", "val", RoundOutcome(2, _mask([]), _mask([(3, 3)]), _mask([(2, 2)])))
    report.add("refcoco", "val", RoundOutcome(2, _mask([]), _mask([])))
    rounds = report.rounds()
    assert rounds[1].ciou == pytest.approx((1 + 4) / (3 + 4))
    assert rounds[1].giou == pytest.approx((1 / 3 + 1) / 2)
    assert rounds[2].ciou == pytest.approx(0 / 1)
    assert rounds[2].giou == pytest.approx((0 + 1) / 2)
    assert rounds[2].twin_total == 1 and rounds[2].twin_choice == 0.0  # 0 px vs 0 px: a miss
    assert report.overall(from_round=1).ciou == pytest.approx(5 / 8)
    markdown = table(report_rows({"SegLLM GT": report}), "ciou", max_rounds=3)
    assert "| SegLLM GT | 71.4 | 0.0 | – |" in markdown


def test_per_source_rows():
    report = Report()
    report.add("refcoco", "val", RoundOutcome(1, _mask([(0, 0)]), _mask([(0, 0)])))
    report.add("paco", "val", RoundOutcome(1, _mask([]), _mask([(0, 0)])))
    rows = report_rows({"m": report})
    assert rows["m: refcoco/val"][1].ciou == 1.0 and rows["m: paco/val"][1].ciou == 0.0


def test_evaluate_cli_end_to_end(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(ModelSource(config=cfg.model.config), ["cup", "bowl", "left", "of"])
    export_checkpoint(model, tmp_path / "ckpt")
    rng = np.random.default_rng(0)
    records = []
    for n in range(2):
        name = f"im{n}.png"
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        rounds = []
        for i in range(3):
            m = np.zeros((40, 48), bool)
            m[5 * i : 5 * i + 10, 4:20] = True
            rounds.append(
                RoundRecord(
                    query="the cup" if i == 0 else f"the bowl left of <the output of round {i}>",
                    mask=encode_mask(m),
                    ref_rounds=[i] if i else [],
                )
            )
        records.append(ConversationRecord(f"c{n}", "toy", "val", name, 40, 48, rounds))
    write_conversations(tmp_path / "toy.jsonl", records)
    out = tmp_path / "eval"
    main(
        [
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--data",
            str(tmp_path / "toy.jsonl"),
            "--image-root",
            str(tmp_path),
            "--out",
            str(out),
            "--max-rounds",
            "3",
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"ground_truth", "predicted"}
    assert set(results["predicted"]["toy/val"]) == {"1", "2", "3"}
    assert results["predicted"]["toy/val"]["1"]["n"] == 2
    assert (out / "rounds.png").stat().st_size > 1000
    assert "| ground_truth |" in (out / "table.md").read_text()
