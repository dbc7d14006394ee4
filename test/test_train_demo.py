"""The demo trainer learns: on fresh synthetic conversations the loss falls and the mask IoU
rises within a few dozen CPU steps, and what it writes loads back as a working model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import DEMO_CONFIG

from segllm_ros.model.segllm import SegLLMModel
from segllm_training.shape_probe import main as shape_probe_main
from segllm_training.train_demo import load_experiment, lr_at, train


def test_demo_trainer_loss_falls_and_iou_rises(tmp_path):
    model_cfg, cfg = load_experiment(DEMO_CONFIG)
    cfg.batch_size, cfg.max_steps, cfg.warmup_steps = 4, 90, 10
    cfg.checkpoint_every = 1000
    cfg.threads = 1  # 2 OpenMP threads on a shared 2-core machine run 15x slower, not faster
    _, history = train(model_cfg, cfg, tmp_path, progress=False)
    assert len(history) == 90
    loss = np.array([h["loss"] for h in history])
    iou = np.array([h["iou"] for h in history])
    assert loss[-15:].mean() < 0.6 * loss[:15].mean()
    assert iou[-30:].mean() > iou[:30].mean() + 0.03
    reloaded = SegLLMModel.from_pretrained(tmp_path)
    assert reloaded.config.sam == model_cfg.sam
    for part in ("vision", "llm"):   # saved configs are complete: every given key survives
        saved = getattr(reloaded.config, part)
        assert all(saved[k] == v for k, v in getattr(model_cfg, part).items()), part
    assert (tmp_path / "train_log.json").is_file()


def test_learning_rate_schedule_warms_up_then_decays():
    _, cfg = load_experiment(DEMO_CONFIG)
    assert lr_at(0, 0.0, cfg) < lr_at(cfg.warmup_steps, 0.0, cfg) == cfg.lr
    assert lr_at(cfg.max_steps, 0.0, cfg) == cfg.lr * cfg.min_lr_ratio
    # without a time budget the clock does not move the schedule (reproducible runs)
    assert cfg.max_minutes is None
    assert lr_at(cfg.warmup_steps + 1, 600.0, cfg) == lr_at(cfg.warmup_steps + 1, 0.0, cfg)
    # with one, it counts as progress too: half the minutes gone = half-way down the cosine
    cfg.max_minutes = 30.0
    half = lr_at(cfg.warmup_steps + 1, cfg.max_minutes / 2, cfg)
    assert abs(half - cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) / 2)) < 1e-9


def test_a_rerun_gives_the_same_weights(tmp_path):
    """Step-limited runs with one seed and thread count are bitwise reproducible in both
    stages of the recipe (from scratch, then grown from the first); that the clock does not
    move the schedule is checked above."""
    model_cfg, cfg = load_experiment(DEMO_CONFIG, ["model.sam.cnn_context_layers=0"])
    grown_cfg, _ = load_experiment(DEMO_CONFIG)
    cfg.batch_size, cfg.max_steps, cfg.warmup_steps, cfg.threads = 2, 3, 1, 1
    runs = []
    for name in ("a", "b"):
        first, _ = train(model_cfg, cfg, tmp_path / name / "stage1", progress=False)
        second, _ = train(grown_cfg, cfg, tmp_path / name / "stage2", progress=False,
                          init=tmp_path / name / "stage1")
        runs.append((first.state_dict(), second.state_dict()))
    for stage in (0, 1):
        a, b = runs[0][stage], runs[1][stage]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"stage {stage + 1} differs"
    other_seed = replace(cfg, seed=cfg.seed + 1)
    changed, _ = train(model_cfg, other_seed, tmp_path / "c", progress=False)
    assert not all(torch.equal(v, runs[0][0][k]) for k, v in changed.state_dict().items())


def test_overrides_reach_the_config_and_bad_ones_are_named():
    model_cfg, cfg = load_experiment(DEMO_CONFIG, [
        "model.sam.cnn_context_layers=0", "model.reference_token_dropout=0.25",
        "train.tabletop.twin_describe_weight=10", "train.loss.reference=0"])
    assert model_cfg.sam.cnn_context_layers == 0
    assert model_cfg.reference_token_dropout == 0.25
    assert cfg.tabletop.twin_describe_weight == 10
    assert cfg.tabletop.image_size == 128      # the section's other keys stay
    assert cfg.loss.reference == 0 and cfg.loss.dice == 1.0
    model_cfg, cfg = load_experiment(DEMO_CONFIG)
    assert model_cfg.sam.cnn_context_layers == 2 and cfg.tabletop.twin_describe_weight == 3
    for bad in ("model.sam.cnn_context_layers", "sam.cnn_context_layers=0", "model=1"):
        with pytest.raises(ValueError, match=r"not model\.KEY=VALUE"):
            load_experiment(DEMO_CONFIG, [bad])
    with pytest.raises(ValueError, match="unknown SamConfig keys"):
        load_experiment(DEMO_CONFIG, ["model.sam.no_such_switch=1"])


def test_kept_checkpoints_give_the_prompt_trajectory(tmp_path, capsys):
    """``keep_checkpoints`` leaves every checkpoint of a run behind, and ``shape_probe
    --trajectory`` reads the prompt's words from each, in step order."""
    model_cfg, cfg = load_experiment(DEMO_CONFIG)
    cfg.batch_size, cfg.max_steps, cfg.checkpoint_every, cfg.threads = 2, 4, 2, 1
    cfg.keep_checkpoints = True
    train(model_cfg, cfg, tmp_path, progress=False)
    kept = sorted((tmp_path / "steps").iterdir())
    assert [p.name for p in kept] == ["2", "4"]
    assert [len(json.loads((p / "train_log.json").read_text())) for p in kept] == [2, 4]
    capsys.readouterr()
    shape_probe_main(["--trajectory", *map(str, reversed(kept))])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["checkpoint"] for r in rows] == [str(p) for p in kept]
    assert all(0.0 <= r["colour"] + r["shape"] <= 1.0 + 1e-6 for r in rows)
    assert rows[0]["colour_variance"] != rows[1]["colour_variance"]
