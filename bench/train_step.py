"""Cost of one demo training step, per setting the demo recipe chooses between.

    .venv/bin/python bench/train_step.py [--config config/train/demo_stage1.yaml]
        [--checkpoint models/demo] --out bench/results [--repeats 3] [--steps 6]
        [--batch-size 8]

Why: the demo model must train in an hour on a 2-core CPU, so the recipe's settings are
chosen by what a step costs: OpenMP threads (1 or 2), re-decoding every referenced object
(mask-aware decoding's second decode, skipped when ``loss.reference`` is 0), and flushing
subnormal floats to zero. Steps are timed on a trained checkpoint, because subnormals only
appear once masks and attention have sharpened. All eight combinations run in one process
on the same batches, so the ratios hold even when the machine's speed drifts:

* every repeat times ``--steps`` steps of each setting (after one warm-up step, not
  recorded); the setting that goes first rotates between repeats;
* a step is the trainer's own (``segllm_training.trainer.loop.train_step``: forward,
  backward, gradient clipping, AdamW, on one CPU process), timed with ``time.perf_counter``;
  making the batch (scene generation) is timed apart, as ``data_s``;
* the CPU time the hypervisor took from this VM (``steal`` in ``/proc/stat``) is reported as
  a share of the run, because a shared 2-core machine slows down 2 threads first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from rounds import machine_info  # also puts this checkout first on sys.path

from segllm_ros.model.segllm import SegLLMModel
from segllm_training.trainer.batch import Batch, collate
from segllm_training.trainer.config import TrainConfig
from segllm_training.trainer.data import Source, TabletopStream
from segllm_training.trainer.loop import TrainingModule, train_step

BASELINE = "1 thread, re-decode, subnormals kept"


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs so far; (0, 0) where /proc/stat is missing."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0, 0
    ticks = [int(v) for v in fields]
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])


def label(threads: int, redecode: bool, flush: bool) -> str:
    return (
        f"{threads} thread{'s' if threads > 1 else ''}, "
        f"{'re-decode' if redecode else 'no re-decode'}, "
        f"subnormals {'flushed' if flush else 'kept'}"
    )


def time_steps(
    module: TrainingModule,
    batches: list[Batch],
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    threads: int,
    flush: bool,
) -> list[float]:
    """Seconds per trainer step (:func:`train_step`) on ``batches`` (the first is a warm-up)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush)
    accelerator = Accelerator(cpu=True)
    params = [p for p in module.parameters() if p.requires_grad]
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        train_step(accelerator, module, opt, params, [batch], cfg, i)
        times.append(time.perf_counter() - start)
    return times[1:]


def run(
    config_path: str, checkpoint: str, repeats: int, steps: int, batch_size: int
) -> dict[str, Any]:
    cfg = TrainConfig.load(config_path)
    model = SegLLMModel.from_pretrained(checkpoint).train()
    # A small rate: the steps should keep the checkpoint's sharpness, not retrain it.
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    stream = TabletopStream([Source(s) for s in cfg.data.sources], seed=0)
    data_s, batches = [], []
    for _ in range(steps + 1):
        start = time.perf_counter()
        samples = stream.next_batch(batch_size)
        data_s.append(time.perf_counter() - start)
        batches.append(collate(samples, model))
    modules = {
        redecode: TrainingModule(
            model, replace(cfg.loss, reference=cfg.loss.reference if redecode else 0.0)
        )
        for redecode in (True, False)
    }

    settings = list(itertools.product((1, 2), (True, False), (False, True)))
    times: dict[tuple[int, bool, bool], list[float]] = {key: [] for key in settings}
    steal0, total0 = cpu_ticks()
    for r in range(repeats):
        for key in settings[r % len(settings) :] + settings[: r % len(settings)]:
            threads, redecode, flush = key
            times[key] += time_steps(modules[redecode], batches, opt, cfg, threads, flush)
    steal1, total1 = cpu_ticks()
    base = statistics.median(times[1, True, False])
    table = [
        {
            "setting": label(*key),
            "threads": key[0],
            "reference_redecode": key[1],
            "flush_denormal": key[2],
            "step_s": {"median": statistics.median(v), "min": min(v), "max": max(v)},
            "steps_per_hour": 3600 / statistics.median(v),
            "speedup_vs_baseline": base / statistics.median(v),
        }
        for key, v in times.items()
    ]
    return {
        "config": config_path,
        "checkpoint": checkpoint,
        "batch_size": batch_size,
        "repeats": repeats,
        "steps_per_repeat": steps,
        "baseline": BASELINE,
        "table": table,
        "data_s_per_batch": statistics.median(data_s),
        "steal_share": (steal1 - steal0) / max(total1 - total0, 1),
        "machine": machine_info(),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Median step time per setting (bar: min..max), with the speed-up over the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["table"]
    med = [row["step_s"]["median"] for row in rows]
    err = [
        [m - row["step_s"]["min"] for m, row in zip(med, rows, strict=True)],
        [row["step_s"]["max"] - m for m, row in zip(med, rows, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    bars = ax.bar(
        [row["setting"].replace(", ", "\n") for row in rows],
        med,
        yerr=err,
        capsize=4,
        color=["tab:blue" if row["flush_denormal"] else "tab:gray" for row in rows],
    )
    for bar, row in zip(bars, rows, strict=True):
        ax.annotate(
            f"×{row['speedup_vs_baseline']:.2f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_ylabel("seconds per step (median, bar: min..max)")
    ax.set_title(
        f"demo training step, {result['batch_size']} conversations "
        f"(CPU steal {100 * result['steal_share']:.0f}% of the run)"
    )
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default="config/train/demo_stage1.yaml",
        help="the demo stage whose data and loss are timed",
    )
    parser.add_argument(
        "--checkpoint", default="models/demo", help="trained model whose steps are timed"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    result = run(args.config, args.checkpoint, args.repeats, args.steps, args.batch_size)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_step.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "train_step.png")
    for row in result["table"]:
        print(
            f"{row['setting']:<44} {row['step_s']['median']:.3f} s/step "
            f"(×{row['speedup_vs_baseline']:.2f}, {row['steps_per_hour']:.0f} steps/h)"
        )
    print(
        f"data: {result['data_s_per_batch']:.3f} s/batch; CPU steal "
        f"{100 * result['steal_share']:.1f}%"
    )
    return result


if __name__ == "__main__":
    main()
