"""Crash safety of the trainer: SIGKILL mid-run and resume gives the loss sequence of an
uninterrupted run (same seed), and a non-finite loss skips the step with a message and never
reaches a checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import (
    ROOT,
    env,
    run_training,
    tiny_config,
    tiny_config_dict,
    train_command,
    write_config,
)

from segllm_training.trainer.loop import NonFiniteLossError, read_metrics, train

STEPS = 16


def test_resume_after_sigkill_continues_the_same_loss_sequence(tmp_path):
    config = write_config(
        tiny_config_dict(max_steps=STEPS, checkpoint_every=4, per_device_batch=4),
        tmp_path / "tiny.yaml",
    )
    run_training(config, tmp_path / "straight")
    straight = read_metrics(tmp_path / "straight")

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        train_command(config, out),
        env=env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 6:  # past checkpoint 4
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    assert len(read_metrics(out)) < STEPS
    run_training(config, out)  # same command: resumes from step-N
    resumed = read_metrics(out)

    assert [m["step"] for m in resumed] == list(range(STEPS))
    assert [m["loss"] for m in resumed] == [m["loss"] for m in straight]
    assert [m["lr"] for m in resumed] == [m["lr"] for m in straight]
    final = load_file(out / "final" / "model.safetensors")
    reference = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    assert all(torch.equal(final[k], reference[k]) for k in reference)
    # and it learned: the loss of the last steps is well below the first ones
    losses = [m["loss"] for m in straight]
    assert sum(losses[-4:]) < 0.85 * sum(losses[:4])


def test_non_finite_loss_skips_steps_and_never_reaches_a_checkpoint(tmp_path, caplog):
    good = tiny_config(max_steps=4, checkpoint_every=2, per_device_batch=2)
    train(good, tmp_path, progress=False)
    ckpts = tmp_path / "checkpoints"
    before = load_file(ckpts / "step-00000004" / "model.safetensors")

    bad = tiny_config(max_steps=10, checkpoint_every=2, per_device_batch=2, max_bad_steps=3)
    bad.loss.text = float("inf")  # every loss is inf from here on
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite steps"):
        train(bad, tmp_path, progress=False)  # resumes at step 4, fails at step 6
    assert "non-finite loss" in caplog.text and "step skipped, weights unchanged" in caplog.text
    # the checkpoint written in between (step 6) holds the untouched step-4 weights
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000004", "step-00000006"]
    after = load_file(ckpts / "step-00000006" / "model.safetensors")
    assert all(torch.equal(after[k], before[k]) and torch.isfinite(after[k]).all() for k in before)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records] == [False] * 4 + [True] * 3
