"""Train the bundled demo SegLLM on synthetic tabletop conversations, on CPU.

    python -m segllm_training.train_demo --config config/demo_model.yaml --out models/demo

Conversations are generated on the fly from a seeded stream that never sees the held-out
evaluation seeds. A run is limited by steps and its schedule follows the step, so with the
same seed and thread count it gives the same weights on the same machine, however loaded the
machine is. A usable checkpoint is written every ``checkpoint_every`` steps and at the end
(also when the optional time budget ``max_minutes`` runs out).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from segllm_ros.model.config import SegLLMConfig
from segllm_ros.model.segllm import SegLLMModel
from segllm_training.batch import Batch, Sample, SampleRound, collate
from segllm_training.build import word_tokenizer
from segllm_training.losses import LossWeights, forward_batch
from segllm_training.tabletop import TabletopConfig, TabletopConversation, generate_conversation
from segllm_training.tabletop import vocabulary as tabletop_vocabulary
from segllm_training.train import lr_factor
from segllm_training.train_config import from_dict

TRAIN_SEED = 0
EVAL_SEED = 1_000_003  # held-out conversations come from a different stream


@dataclass
class DemoTrainConfig:
    seed: int = TRAIN_SEED
    batch_size: int = 8
    max_steps: int = 4000
    max_minutes: float | None = None
    """Optional wall-clock budget for exploratory runs: it stops the run and counts as
    schedule progress, which makes the result depend on the machine's speed."""
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: bool = False
    """Also keep each checkpoint in ``out/steps/{step}`` (e.g. to follow the prompt's words
    through a run with ``shape_probe --trajectory``); the last one is always ``out``."""
    threads: int = 2
    tabletop: TabletopConfig = field(default_factory=TabletopConfig)
    loss: LossWeights = field(default_factory=LossWeights)

    @classmethod
    def from_dict(cls, data: dict) -> DemoTrainConfig:
        return from_dict(cls, data)


def to_sample(conv: TabletopConversation) -> Sample:
    return Sample(conv.scene.image, [SampleRound(r.query, list(r.ref_rounds),
                                                 conv.scene.target_mask(r.target))
                                     for r in conv.rounds])


def conversation_stream(seed: int, cfg: TabletopConfig) -> Iterator[TabletopConversation]:
    rng = np.random.default_rng(seed)
    while True:
        yield generate_conversation(rng, cfg)


def demo_tokenizer(model_cfg: SegLLMConfig, tabletop_cfg: TabletopConfig):
    """Closed vocabulary: the tabletop queries plus the conversation template's words."""
    return word_tokenizer(model_cfg, tabletop_vocabulary(tabletop_cfg))


def lr_at(step: int, minutes: float, cfg: DemoTrainConfig) -> float:
    """Linear warmup, then cosine down to ``min_lr_ratio`` of the peak at ``max_steps``. With
    a time budget, progress is the further of the step and the clock, so a run cut short by
    the clock still ends on a decayed rate."""
    clock = minutes / cfg.max_minutes if cfg.max_minutes else 0.0
    return cfg.lr * lr_factor(step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio,
                              min_progress=clock)


def load_experiment(path: str | Path, overrides: Sequence[str] = ()
                    ) -> tuple[SegLLMConfig, DemoTrainConfig]:
    """The experiment YAML; ``overrides`` are ``section.dotted.key=value`` (value in YAML,
    section ``model`` or ``train``), e.g. ``model.sam.cnn_context_layers=0`` for the recipe's
    first stage, ``train.tabletop.twin_prob=1`` for its second."""
    data = yaml.safe_load(Path(path).read_text())
    for override in overrides:
        key, sep, value = override.partition("=")
        section, _, key = key.partition(".")
        if not sep or section not in ("model", "train") or not key:
            raise ValueError(f"override {override!r} is not model.KEY=VALUE or train.KEY=VALUE")
        *parents, leaf = key.split(".")
        node = data.setdefault(section, {})
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    return SegLLMConfig.from_dict(data["model"]), DemoTrainConfig.from_dict(data.get("train", {}))


def train_step(model: SegLLMModel, batch: Batch, opt: torch.optim.Optimizer,
               cfg: DemoTrainConfig, step: int) -> dict[str, float]:
    """One optimizer step on ``batch`` (gradients clipped over the optimizer's parameters);
    returns the loss metrics. Also what ``bench/train_step.py`` times."""
    loss, metrics = forward_batch(model, batch, cfg.loss)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss at step {step}: {metrics}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]],
                                   cfg.grad_clip)
    opt.step()
    return metrics


def train(model_cfg: SegLLMConfig, cfg: DemoTrainConfig, out: Path, progress: bool = True,
          init: Path | None = None) -> tuple[SegLLMModel, list[dict]]:
    """Train from scratch, or go on from the checkpoint ``init`` (fresh schedule; the log
    continues the earlier stages' log, with steps counted from the first stage). ``init``
    must match ``model_cfg`` except for added CNN context blocks, which start as identity."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    # As the masks sharpen, saturated sigmoids and softmaxes fill the backward pass with
    # subnormal floats, which x86 handles slowly: flushing them to zero makes steps on a
    # trained checkpoint up to 1.4x faster (bench/train_step.py; values below 1.2e-38 only).
    torch.set_flush_denormal(True)
    history: list[dict] = []
    if init is not None:
        model = SegLLMModel.grown_from(init, model_cfg).train()
        log = init / "train_log.json"
        history = json.loads(log.read_text()) if log.is_file() else []
    else:
        model = SegLLMModel.build(model_cfg, demo_tokenizer(model_cfg, cfg.tabletop)).train()
    first_step = history[-1]["step"] + 1 if history else 0
    stage = history[-1].get("stage", 0) + 1 if history else 0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    stream = conversation_stream(cfg.seed, cfg.tabletop)
    start = time.monotonic()
    bar = tqdm(range(cfg.max_steps), disable=not progress, desc="train_demo")
    for step in bar:
        minutes = (time.monotonic() - start) / 60
        lr = lr_at(step, minutes, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = collate([to_sample(next(stream)) for _ in range(cfg.batch_size)], model)
        metrics = train_step(model, batch, opt, cfg, step)
        metrics.update(step=first_step + step, stage=stage, lr=lr, minutes=minutes)
        history.append(metrics)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", iou=f"{metrics['iou']:.3f}")
        if (step + 1) % cfg.checkpoint_every == 0:
            _save(model, out, history)
            if cfg.keep_checkpoints:
                _save(model, out / "steps" / str(first_step + step + 1), history)
        if cfg.max_minutes and minutes > cfg.max_minutes:
            break
    _save(model, out, history)
    return model.eval(), history


def _save(model: SegLLMModel, out: Path, history: list[dict]) -> None:
    model.save_pretrained(out)
    (out / "train_log.json").write_text(json.dumps(history))


TRAIN_FLAGS = ("max_steps", "max_minutes", "seed", "lr", "warmup_steps", "threads")
"""``train`` keys that also have a command-line flag (``--max-steps`` etc.); a flag wins over
the YAML and over ``--set``."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/demo_model.yaml")
    parser.add_argument("--out", default="models/demo")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--max-minutes", type=float,
                        help="also stop after this long (the result then depends on the machine)")
    parser.add_argument("--init", type=Path, help="continue from this checkpoint")
    parser.add_argument("--seed", type=int, help="data stream seed (default: config)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: config)")
    parser.add_argument("--warmup-steps", type=int, help="default: config")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the config, e.g. model.sam.cnn_context_layers=0")
    args = parser.parse_args(argv)
    model_cfg, cfg = load_experiment(args.config, args.set)
    for name in TRAIN_FLAGS:  # typed by argparse, so no round trip through YAML text
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    train(model_cfg, cfg, Path(args.out), init=args.init)


if __name__ == "__main__":
    main()
