"""The demo recipe on the one trainer (config/train/demo_stage{1,2}.yaml): it computes exactly
what a plain PyTorch loop of the recipe computes, it learns, a rerun gives the same weights in
both stages, its stream resumes where it stopped, the stage files and overrides reach the
config, and kept exports give the prompt's trajectory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import ROOT

from segllm_ros.model.segllm import SegLLMModel
from segllm_training.eval.shape_probe import main as shape_probe_main
from segllm_training.tabletop import TabletopConfig, generate_conversation
from segllm_training.tabletop.stream import to_sample
from segllm_training.trainer.batch import collate
from segllm_training.trainer.build import ModelSource, build_model, demo_tokenizer, model_config
from segllm_training.trainer.config import TrainConfig
from segllm_training.trainer.loop import lr_factor, read_metrics, train
from segllm_training.trainer.losses import forward_batch

STAGE1 = ROOT / "config" / "train" / "demo_stage1.yaml"
STAGE2 = ROOT / "config" / "train" / "demo_stage2.yaml"
STAGES_3_4 = [ROOT / "config" / "train" / f"demo_stage{k}.yaml" for k in (3, 4)]
FAST = ["threads=1", "checkpoint_every=1000"]


def weights(path) -> dict[str, torch.Tensor]:
    return SegLLMModel.from_pretrained(path).state_dict()


def plain_loop(cfg: TrainConfig, grow_from=None) -> SegLLMModel:
    """The recipe as the demo's former trainer ran it, in plain PyTorch: seed, build (or
    grow), AdamW with the rate set by hand each step, one conversation stream, clip, step."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    model_cfg = model_config(cfg.model)
    tabletop = TabletopConfig(**cfg.data.sources[0].tabletop)
    model = (
        SegLLMModel.grown_from(grow_from, model_cfg)
        if grow_from
        else SegLLMModel.build(model_cfg, demo_tokenizer(model_cfg, tabletop))
    ).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    for step in range(cfg.max_steps):
        for group in opt.param_groups:
            group["lr"] = cfg.optim.lr * lr_factor(
                step, cfg.optim.warmup_steps, cfg.max_steps, cfg.optim.min_lr_ratio
            )
        batch = collate(
            [to_sample(generate_conversation(rng, tabletop)) for _ in range(cfg.per_device_batch)],
            model,
        )
        loss, _ = forward_batch(model, batch, cfg.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        opt.step()
    return model


def test_the_trainer_computes_what_a_plain_loop_of_the_recipe_computes(tmp_path):
    """Bitwise, in both stages: accelerate, the scheduler, the stream sampler, checkpoints
    and the export add nothing to the numbers (the merge of the demo's own trainer into this
    one was checked the same way against that trainer, on 20 + 20 steps)."""
    short = [*FAST, "per_device_batch=2", "max_steps=4", "optim.warmup_steps=2"]
    first = TrainConfig.load(STAGE1, short)
    second = TrainConfig.load(STAGE2, [*short, f"model.grow_from={tmp_path / 'plain1'}"])
    plain = plain_loop(first)
    plain.save_pretrained(tmp_path / "plain1")
    grown = plain_loop(second, grow_from=tmp_path / "plain1")
    train(first, tmp_path / "stage1", progress=False)
    second.model.grow_from = str(tmp_path / "stage1" / "final")
    train(second, tmp_path / "stage2", progress=False)
    for reference, run in ((plain, "stage1"), (grown, "stage2")):
        expected, got = reference.state_dict(), weights(tmp_path / run / "final")
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), run


def test_demo_trainer_loss_falls_and_iou_rises(tmp_path):
    """The full architecture from scratch on plain tabletop conversations."""
    cfg = TrainConfig.load(
        STAGE1,
        [
            *FAST,
            "per_device_batch=4",
            "max_steps=90",
            "optim.warmup_steps=10",
            "model.overrides.sam.cnn_context_layers=2",
            "data.sources=[{name: tabletop, tabletop: {image_size: 128, max_rounds: 6}}]",
        ],
    )
    train(cfg, tmp_path, progress=False)
    history = read_metrics(tmp_path)
    assert len(history) == 90
    loss = np.array([h["loss"] for h in history])
    iou = np.array([h["iou"] for h in history])
    assert loss[-15:].mean() < 0.6 * loss[:15].mean()
    assert iou[-30:].mean() > iou[:30].mean() + 0.03
    # the schedule: linear warmup to the peak, then the cosine towards min_lr_ratio
    expected = [cfg.optim.lr * lr_factor(s, 10, 90, cfg.optim.min_lr_ratio) for s in range(90)]
    assert [h["lr"] for h in history] == expected
    assert history[0]["lr"] < history[10]["lr"] == cfg.optim.lr > history[-1]["lr"]
    reloaded = SegLLMModel.from_pretrained(tmp_path / "final")
    wanted = model_config(cfg.model)
    assert reloaded.config.sam == wanted.sam
    for part in ("vision", "llm"):  # saved configs are complete: every given key survives
        saved = getattr(reloaded.config, part)
        assert all(saved[k] == v for k, v in getattr(wanted, part).items()), part
    log = json.loads((tmp_path / "final" / "train_log.json").read_text())
    assert [r["step"] for r in log] == list(range(90)) and {r["stage"] for r in log} == {0}


def _recipe(out, seed: int = 0) -> None:
    """The four stages of the recipe, 3 steps each, each grown from the one before."""
    short = [*FAST, "per_device_batch=2", "max_steps=3", "optim.warmup_steps=1"]
    train(TrainConfig.load(STAGE1, [*short, f"seed={seed}"]), out / "stage1", progress=False)
    for k, config in enumerate([STAGE2, *STAGES_3_4], start=2):
        grow = f"model.grow_from={out / f'stage{k - 1}' / 'final'}"
        train(TrainConfig.load(config, [*short, grow]), out / f"stage{k}", progress=False)


def test_a_rerun_gives_the_same_weights(tmp_path):
    """Step-limited runs with one seed and thread count are bitwise reproducible in all four
    stages of the recipe (from scratch, then each grown from the one before: context blocks,
    then instance slots, the plural head and new words); another seed is not."""
    for name in ("a", "b"):
        _recipe(tmp_path / name)
    assert "plural_head.weight" in weights(tmp_path / "a" / "stage4" / "final")
    for stage in ("stage1", "stage2", "stage3", "stage4"):
        a, b = (weights(tmp_path / run / stage / "final") for run in ("a", "b"))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{stage} differs"
    grown = weights(tmp_path / "a" / "stage2" / "final")
    assert any(k.startswith("sam.image_encoder.context.") for k in grown)
    log = json.loads((tmp_path / "a" / "stage2" / "final" / "train_log.json").read_text())
    assert [(r["step"], r["stage"]) for r in log] == [
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 1),
        (4, 1),
        (5, 1),
    ]
    train(
        TrainConfig.load(
            STAGE1, [*FAST, "per_device_batch=2", "max_steps=3", "optim.warmup_steps=1", "seed=1"]
        ),
        tmp_path / "c",
        progress=False,
    )
    first = weights(tmp_path / "a" / "stage1" / "final")
    other = weights(tmp_path / "c" / "final")
    assert not all(torch.equal(v, first[k]) for k, v in other.items())


def test_the_stream_resumes_where_it_stopped(tmp_path):
    """A stream-mode run stopped at a checkpoint and started again with the same ``out``
    ends with the weights of an uninterrupted run: the data generator's state, not only its
    position, is part of the checkpoint. (Warmup longer than the run: the schedule does not
    depend on ``max_steps``.)"""
    short = [*FAST, "per_device_batch=2", "optim.warmup_steps=10"]
    train(TrainConfig.load(STAGE1, [*short, "max_steps=4"]), tmp_path / "straight", progress=False)
    train(TrainConfig.load(STAGE1, [*short, "max_steps=2"]), tmp_path / "resumed", progress=False)
    train(TrainConfig.load(STAGE1, [*short, "max_steps=4"]), tmp_path / "resumed", progress=False)
    straight = read_metrics(tmp_path / "straight")
    resumed = read_metrics(tmp_path / "resumed")
    assert [m["loss"] for m in resumed] == [m["loss"] for m in straight]
    a, b = weights(tmp_path / "straight" / "final"), weights(tmp_path / "resumed" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stage_files_and_overrides_reach_the_config_and_bad_ones_are_named():
    first, second = TrainConfig.load(STAGE1), TrainConfig.load(STAGE2)
    assert model_config(first.model).sam.cnn_context_layers == 0
    assert model_config(second.model).sam.cnn_context_layers == 2  # the architecture's own
    assert second.model.grow_from == "runs/demo-stage1/final"
    # what stage 2 does not restate comes from demo_base.yaml, as in stage 1
    assert second.trainable == first.trainable and second.threads == first.threads == 1
    assert second.optim.weight_decay == 0.01 and second.optim.lr == 0.0006
    assert second.loss.reference == 0 and second.loss.dice == 1.0
    assert (
        second.data.sources[0].tabletop["twin_describe_weight"],
        second.data.sources[0].tabletop["image_size"],
    ) == (10, 128)
    assert (first.max_steps, second.max_steps) == (900, 3150)

    cfg = TrainConfig.load(
        STAGE2,
        [
            "model.overrides.reference_token_dropout=0.25",
            "loss.reference=1",
            "optim.warmup_steps=7",
        ],
    )
    assert model_config(cfg.model).reference_token_dropout == 0.25
    assert cfg.loss.reference == 1 and cfg.loss.dice == 1.0 and cfg.optim.warmup_steps == 7
    assert cfg.optim.lr == 0.0006  # the section's other keys stay
    for bad in ("optim.lr", "=1", ".lr=1"):
        with pytest.raises(ValueError, match="is not KEY=VALUE"):
            TrainConfig.load(STAGE2, [bad])
    with pytest.raises(ValueError, match="unknown OptimSettings keys"):
        TrainConfig.load(STAGE2, ["optim.no_such_setting=1"])
    with pytest.raises(ValueError, match="unknown SamConfig keys"):
        model_config(TrainConfig.load(STAGE2, ["model.overrides.sam.no_such_switch=1"]).model)
    with pytest.raises(ValueError, match="grow_from needs the grown model's config"):
        build_model(ModelSource(checkpoint="models/demo", grow_from="runs/demo-stage1/final"))


def test_kept_exports_give_the_prompt_trajectory(tmp_path, capsys):
    """``keep_exports`` leaves a model at every checkpoint of a run, and ``shape_probe
    --trajectory`` reads the prompt's words from each, in step order."""
    cfg = TrainConfig.load(
        STAGE1,
        [
            "threads=1",
            "per_device_batch=2",
            "max_steps=4",
            "checkpoint_every=2",
            "keep_exports=true",
        ],
    )
    train(cfg, tmp_path, progress=False)
    kept = sorted((tmp_path / "steps").iterdir())
    assert [p.name for p in kept] == ["2", "4"]
    assert [len(json.loads((p / "train_log.json").read_text())) for p in kept] == [2, 4]
    capsys.readouterr()
    shape_probe_main(["--trajectory", *map(str, reversed(kept))])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["checkpoint"] for r in rows] == [str(p) for p in kept]
    assert all(0.0 <= r["colour"] + r["shape"] <= 1.0 + 1e-6 for r in rows)
    assert rows[0]["colour_variance"] != rows[1]["colour_variance"]
