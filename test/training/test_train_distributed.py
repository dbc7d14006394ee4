"""Two CPU processes (``torchrun --nproc_per_node 2``, DDP over gloo on loopback) train like
one process with the same global batch: same samples, same reference dropout draws, the
gradient averaged; only the per-process loss averaging differs slightly."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from train_helpers import ROOT, env, run_training, tiny_config_dict, write_config

from segllm_training.trainer.loop import read_metrics

STEPS = 6


def test_distributed_two_processes_match_one_process(tmp_path):
    common = {"max_steps": STEPS, "checkpoint_every": 1000}
    one = write_config(tiny_config_dict(per_device_batch=4, **common), tmp_path / "one.yaml")
    two = write_config(tiny_config_dict(per_device_batch=2, **common), tmp_path / "two.yaml")
    run_training(one, tmp_path / "one")
    port = str(random.randint(20000, 40000))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            port,
            "-m",
            "segllm_training.train",
            "--config",
            str(two),
            "--out",
            str(tmp_path / "two"),
            "--no-progress",
        ],
        env=env(),
        cwd=ROOT,
        check=True,
        timeout=600,
        capture_output=True,
    )
    single, ddp = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [m["step"] for m in ddp] == list(range(STEPS))  # one log line per step
    loss_1 = np.array([m["loss"] for m in single])
    loss_2 = np.array([m["loss"] for m in ddp])
    assert np.allclose(loss_1, loss_2, rtol=0.02), (loss_1, loss_2)
    assert loss_1[-1] < loss_1[0]  # and both learn
    w1 = load_file(tmp_path / "one" / "final" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "final" / "model.safetensors")
    gap = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert gap < 5e-3, gap
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)  # truly two different runs
