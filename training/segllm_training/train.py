r"""Train SegLLM: the demo model on one CPU, or SegLLM-7B on many GPUs, from one YAML.

    python -m segllm_training.train --config config/train/tabletop_tiny.yaml --out runs/tiny
    python -m segllm_training.train --config config/train/demo_stage1.yaml --out runs/demo-stage1
    torchrun --nproc_per_node 4 -m segllm_training.train \
        --config config/train/segllm_7b_4gpu.yaml --out runs/7b
    accelerate launch --config_file config/train/accelerate_zero2.yaml -m segllm_training.train ...

The run directory and its resume behaviour: :mod:`segllm_training.trainer.loop`.
"""

from __future__ import annotations

import argparse
import logging

from segllm_training.trainer.config import TrainConfig
from segllm_training.trainer.loop import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="experiment YAML (config/train/)")
    parser.add_argument("--out", required=True, help="run directory (resumed if present)")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the experiment, e.g. optim.lr=0.0006 or "
        "model.grow_from=runs/demo-stage1/final",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig.load(args.config, args.set)
    if args.max_steps:
        cfg.max_steps = args.max_steps
    train(cfg, args.out, progress=not args.no_progress)


if __name__ == "__main__":
    main()
