"""The training loop, at any scale: one process on a CPU (the demo model, the tests), or many
GPUs through ``accelerate`` (run it with ``python -m segllm_training.train``).

The same loop serves all of them: ``accelerate`` picks DDP under ``torchrun`` (NCCL on GPUs,
gloo on CPUs) and DeepSpeed ZeRO-2 under its launcher. A run directory holds
``checkpoints/step-N`` (model trainables, optimizer, scheduler, sampler, RNG; written
atomically every ``checkpoint_every`` steps), ``metrics.jsonl``, ``tensorboard/`` and the final
exported model ``final/`` (a project checkpoint the engine loads, with ``train_log.json``:
the metrics of this run after those of the checkpoint it grew from). Starting again with the
same ``--out`` resumes from the newest checkpoint and continues the same run exactly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from segllm_ros.model.segllm import SegLLMModel
from segllm_training.tabletop import TabletopConfig
from segllm_training.tabletop import vocabulary as tabletop_vocabulary
from segllm_training.trainer.batch import Batch, collate
from segllm_training.trainer.build import (
    build_model,
    count_parameters,
    enable_checkpointing,
    export_checkpoint,
    setup_trainable,
)
from segllm_training.trainer.config import TrainConfig
from segllm_training.trainer.data import MixtureSampler, Source, TabletopStream
from segllm_training.trainer.losses import LossWeights, forward_batch

log = logging.getLogger("segllm_training.train")
TRAIN_LOG = "train_log.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(FloatingPointError):
    """Too many consecutive steps with a NaN/inf loss or gradient."""


class TrainingModule(nn.Module):
    """The model plus its loss as one module, so DDP/DeepSpeed see a single forward."""

    def __init__(self, model: SegLLMModel, weights: LossWeights) -> None:
        super().__init__()
        self.model = model
        self.weights = weights

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return forward_batch(self.model, batch, self.weights)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup, then cosine from 1 down to ``min_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Checkpoints:
    """``step-N`` folders, written to ``step-N.tmp`` and renamed when complete, so a kill
    during a save leaves the previous checkpoint as the newest usable one."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root = root
        self.keep = keep

    def latest(self) -> Path | None:
        done = sorted(
            p
            for p in self.root.glob("step-*")
            if p.suffix != ".tmp" and (p / "trainer.json").is_file()
        )
        return done[-1] if done else None

    def save(self, accelerator: Accelerator, step: int) -> Path:
        final = self.root / f"step-{step:08d}"
        tmp = final.with_suffix(".tmp")
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / "trainer.json").write_text(json.dumps({"step": step}))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in sorted(p for p in self.root.glob("step-*") if p.suffix != ".tmp")[
                : -self.keep
            ]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final


def _trainable_only(module: nn.Module):
    """Save hook: checkpoints keep only the trained weights (the frozen 7B base comes from
    the model source again on resume)."""
    names = {n for n, p in module.named_parameters() if p.requires_grad}

    def hook(models, weights, output_dir) -> None:
        for i, state in enumerate(weights):
            weights[i] = {k: v for k, v in state.items() if _strip(k) in names}

    return hook


def _strip(name: str) -> str:
    return name.removeprefix("module.")


def _all_finite(accelerator: Accelerator, value: torch.Tensor) -> bool:
    """Whether ``value`` is finite on every process (all must skip a step together)."""
    bad = torch.tensor([0.0 if torch.isfinite(value).all() else 1.0], device=accelerator.device)
    return bool(accelerator.reduce(bad, "sum").item() == 0)


def _check_weights(model: nn.Module) -> None:
    bad = [
        n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()
    ]
    if bad:
        raise NonFiniteLossError(f"non-finite weights {bad[:5]}; checkpoint not written")


METRIC_KEYS = ("loss", "text", "mask", "iou_pred", "ref_mask", "plural", "iou")


def _global_mean(accelerator: Accelerator, metrics: list[dict]) -> dict[str, float]:
    """Mean of each metric over micro-batches and processes (a metric missing from a batch,
    e.g. ``ref_mask`` without references, does not count there)."""
    sums = torch.tensor(
        [[sum(m.get(k, 0.0) for m in metrics), sum(k in m for m in metrics)] for k in METRIC_KEYS],
        dtype=torch.float64,
        device=accelerator.device,
    )
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums, "sum")
    return {k: v / n for k, (v, n) in zip(METRIC_KEYS, sums.tolist(), strict=True) if n > 0}


class MetricsLog:
    """``metrics.jsonl`` (one line per step, flushed) that a resume truncates to the
    checkpoint, so the file always tells the run's real history."""

    def __init__(self, path: Path, start_step: int, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if enabled and path.is_file():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line and json.loads(line)["step"] < start_step
            ]
            path.write_text("".join(line + "\n" for line in kept))
        self.file = path.open("a") if enabled else None

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def read_metrics(out: str | Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def source_vocabulary(cfg: TrainConfig) -> list[str]:
    """Words of the synthetic sources, for a word tokenizer (models built from a config)."""
    return sorted(
        {
            w
            for s in cfg.data.sources
            if s.tabletop is not None
            for w in tabletop_vocabulary(TabletopConfig(**s.tabletop))
        }
    )


def prepare_model(cfg: TrainConfig) -> SegLLMModel:
    """The starting model with its trainable parts opened (LoRA injected), activation
    checkpointing and the frozen weights' storage precision as configured."""
    model = build_model(cfg.model, source_vocabulary(cfg))
    setup_trainable(model, cfg.trainable)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model.llm)
    if cfg.frozen_dtype != "fp32":
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(DTYPES[cfg.frozen_dtype])
    return model


def train_step(
    accelerator: Accelerator,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    batches: list[Batch],
    cfg: TrainConfig,
    step: int,
) -> tuple[bool, list[dict]]:
    """One optimizer step on this process's micro-batches (forward, backward, gradient
    clipping, optimizer); False, with the weights unchanged, when any process saw a
    non-finite loss or gradient norm. Also what ``bench/train_step.py`` times."""
    finite, metrics_list = True, []
    for batch in batches:
        with accelerator.accumulate(module):
            loss, metrics = module(batch.to(accelerator.device))
            if _all_finite(accelerator, loss.detach()):
                metrics_list.append(metrics)
            else:
                finite = False
                log.error(
                    "step %d: non-finite loss %s on some process; step skipped, weights unchanged",
                    step,
                    metrics,
                )
                if accelerator.distributed_type == DistributedType.DEEPSPEED:
                    # DeepSpeed steps inside backward: stop before it can.
                    raise NonFiniteLossError(
                        f"non-finite loss at step {step}; the last checkpoint is intact"
                    )
                loss = loss * 0  # keeps every process's collectives in step; discarded
            accelerator.backward(loss)
    if finite:
        grad_norm = accelerator.clip_grad_norm_(params, cfg.optim.grad_clip)
        if grad_norm is not None:
            finite = _all_finite(accelerator, torch.as_tensor(grad_norm).float())
        if not finite:
            log.error("step %d: non-finite gradient norm; step skipped, weights unchanged", step)
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return finite, metrics_list


def make_sampler(cfg: TrainConfig, model: SegLLMModel) -> MixtureSampler | TabletopStream:
    skipped: Counter = Counter()  # broken data of every source, counted
    sources = [Source(s, skipped) for s in cfg.data.sources]
    if cfg.data.stream:
        return TabletopStream(sources, cfg.seed)
    return MixtureSampler(
        sources, cfg.data.mixing, cfg.seed, cfg.data.sample, model.config.reference_token_dropout
    )


def earlier_stages(cfg: TrainConfig) -> list[dict]:
    """The training log of the checkpoint this run grows from (empty for a fresh start)."""
    path = Path(cfg.model.grow_from or "") / TRAIN_LOG
    return json.loads(path.read_text()) if cfg.model.grow_from and path.is_file() else []


def _first_step(earlier: list[dict]) -> int:
    return earlier[-1]["step"] + 1 if earlier else 0


def export(model: SegLLMModel, directory: Path, earlier: list[dict], records: list[dict]) -> None:
    """The model as a project checkpoint, with the training log of every stage so far (steps
    counted from the first stage's start)."""
    first, stage = _first_step(earlier), earlier[-1].get("stage", 0) + 1 if earlier else 0
    log_ = earlier + [{**r, "step": first + r["step"], "stage": stage} for r in records]
    export_checkpoint(model, directory)
    (directory / TRAIN_LOG).write_text(json.dumps(log_))


def train(cfg: TrainConfig, out: str | Path, progress: bool = True) -> SegLLMModel:
    """Run (or resume) the experiment in ``out``; returns the trained model (LoRA layers in
    place)."""
    out = Path(out)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # CPU processes under torchrun: DDP over gloo
        gradient_accumulation_steps=cfg.optim.grad_accum,
        mixed_precision={"fp32": "no"}.get(cfg.precision, cfg.precision),
        kwargs_handlers=[ddp],
        step_scheduler_with_optimizer=False,
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(cfg.flush_denormal)
    set_seed(cfg.seed)
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    model = prepare_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, cfg.optim.warmup_steps, cfg.max_steps, cfg.optim.min_lr_ratio),
    )
    sampler = make_sampler(cfg, model)
    module = TrainingModule(model, cfg.loss)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # No DataLoader goes through accelerate, so DeepSpeed's "auto" values are set here.
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = cfg.per_device_batch
        ds["gradient_clipping"] = cfg.optim.grad_clip
    module, optimizer = accelerator.prepare(module, optimizer)
    accelerator.register_for_checkpointing(scheduler, sampler)
    accelerator.register_save_state_pre_hook(_trainable_only(accelerator.unwrap_model(module)))

    checkpoints = Checkpoints(out / "checkpoints", cfg.keep_checkpoints)
    start = 0
    latest = checkpoints.latest()
    if latest is not None:
        accelerator.load_state(str(latest), strict=False)
        start = json.loads((latest / "trainer.json").read_text())["step"]
        log.info("resumed from %s (step %d)", latest, start)
    metrics_log = MetricsLog(out / "metrics.jsonl", start, main)
    writer = SummaryWriter(str(out / "tensorboard")) if main else None
    if main:
        log.info("parameters: %s", count_parameters(model))

    earlier = earlier_stages(cfg)
    bad_steps = 0
    bar = tqdm(
        range(start, cfg.max_steps),
        initial=start,
        total=cfg.max_steps,
        disable=not (progress and main),
        desc="train",
    )
    for step in bar:
        t0 = time.perf_counter()
        batches = [
            collate(
                sampler.next_batch(
                    cfg.per_device_batch, accelerator.process_index, accelerator.num_processes
                ),
                model,
            )
            for _ in range(cfg.optim.grad_accum)
        ]
        finite, step_metrics = train_step(
            accelerator, module, optimizer, params, batches, cfg, step
        )
        bad_steps = 0 if finite else bad_steps + 1
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        record = _global_mean(accelerator, step_metrics)
        record.update(
            step=step,
            lr=lr,
            skipped=not finite,
            step_s=time.perf_counter() - t0,
            bad_data=sum(sampler.skipped.values()),
        )
        metrics_log.write(record)
        if bad_steps >= cfg.max_bad_steps:
            raise NonFiniteLossError(
                f"{bad_steps} consecutive non-finite steps (last: {step}); "
                "stopping with the last good checkpoint"
            )
        if writer is not None and (step + 1) % cfg.log_every == 0:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    writer.add_scalar(f"train/{key}", value, step)
        if "loss" in record:
            bar.set_postfix(loss=f"{record['loss']:.3f}", iou=f"{record.get('iou', 0):.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps:
            _check_weights(model)
            checkpoints.save(accelerator, step + 1)
            if cfg.keep_exports and main:
                export(
                    model,
                    out / "steps" / str(_first_step(earlier) + step + 1),
                    earlier,
                    read_metrics(out),
                )
    metrics_log.close()
    if writer is not None:
        writer.close()
    unwrapped = accelerator.unwrap_model(module).model
    if main:
        export(unwrapped, out / "final", earlier, read_metrics(out))
    accelerator.wait_for_everyone()
    if sampler.skipped and main:
        log.warning("skipped conversations: %s", dict(sampler.skipped))
    return unwrapped.eval()
