"""Resident memory of the serving path under large camera frames (issue 16, item 6).

    .venv/bin/python bench/large_frames.py --out bench/results [--rounds 50]

One conversation, a new 12 MP frame (4000x3000 rgb8 ``sensor_msgs/Image``) every round,
through the same path the node uses (frame buffer -> query worker -> engine), on the bundled
demo model. Two configurations in one run: ``bounded`` (the defaults: history frames kept at
the model's input size, frame buffer bounded in bytes) and ``unbounded`` (history frames at
camera resolution and an unbounded frame buffer, as before the fix). RSS is read from
/proc after every round; JSON + PNG.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import numpy as np
from memory import rss_bytes
from rounds import (  # bench/rounds.py: puts the source tree first
    bench_parser,
    machine_info,
    save_report,
)
from sensor_msgs.msg import Image

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine
from segllm_ros.engine.store import ConversationStore
from segllm_ros.engine.worker import Job, Outcome, Query, QueryWorker, Status, WorkerConfig
from segllm_ros.interface.frame_buffer import DEFAULT_MAX_BYTES, FrameBuffer
from segllm_ros.interface.image_codec import fill_image_msg
from segllm_ros.model.segllm import SegLLMModel
from segllm_ros.paths import default_model_path

CONFIGS = {
    "bounded": {"history_max_side": 0, "buffer_bytes": DEFAULT_MAX_BYTES},
    "unbounded": {"history_max_side": 1 << 30, "buffer_bytes": 1 << 62},
}


def rss_mb() -> float:
    return rss_bytes() / 2**20


def camera_msg(rng: np.random.Generator, h: int, w: int, stamp_ns: int) -> Image:
    """A smooth random frame (blocks), so PNG/RLE sizes are not those of noise."""
    small = rng.integers(0, 255, (h // 100 + 1, w // 100 + 1, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(small, 100, axis=0), 100, axis=1)[:h, :w]
    msg = fill_image_msg(Image(), np.ascontiguousarray(image), "rgb8")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = "camera"
    return msg


def run(model: SegLLMModel, name: str, rounds: int, h: int, w: int) -> dict[str, Any]:
    cfg = CONFIGS[name]
    engine = SegLLMEngine(
        model,
        EngineConfig(history_max_side=cfg["history_max_side"]),
        ConversationStore(max_rounds=rounds),
    )
    frames = FrameBuffer(capacity=30, max_bytes=cfg["buffer_bytes"])
    worker = QueryWorker(engine, frames, WorkerConfig(max_image_age_s=0, max_image_pixels=h * w))
    worker.start()
    rng = np.random.default_rng(0)
    done = threading.Event()
    answers: list[tuple[Status, str]] = []  # not the outcomes: they hold frame and mask

    def on_done(outcome: Outcome) -> None:
        answers.append((outcome.status, outcome.message))
        done.set()

    gc.collect()
    start = rss_mb()
    rss = []
    for i in range(rounds):
        frames.push(camera_msg(rng, h, w, (i + 1) * 10**9))
        text = "the red circle" if i == 0 else "the blue square to the left of it"
        done.clear()
        worker.submit(Job(Query("robot", f"r{i}", text), on_done))
        done.wait(300)
        assert answers[-1][0] in (Status.OK, Status.NOT_FOUND), answers[-1][1]
        rss.append(rss_mb())
        print(f"{name:>9} round {i + 1:>2}: RSS {rss[-1]:7.0f} MB", flush=True)
    worker.stop()
    return {
        "rss_start_mb": start,
        "rss_mb": rss,
        "growth_mb": rss[-1] - start,
        "history_bytes": engine.history_nbytes("robot")["history"],
        "frame_buffer_bytes": frames.nbytes,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in report["configs"].items():
        ax.plot(range(1, len(res["rss_mb"]) + 1), res["rss_mb"], marker=".", label=name)
    ax.set_xlabel("round (a new frame each)")
    ax.set_ylabel("resident memory (MB)")
    ax.set_title(f"{report['megapixels']} MP frames, one conversation", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    parser = bench_parser(__doc__, rounds=50)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = SegLLMModel.from_pretrained(args.model or default_model_path())
    h, w = 3000, 4000
    report: dict[str, Any] = {
        "machine": machine_info(),
        "megapixels": h * w / 1e6,
        "rounds": args.rounds,
        "configs": {},
    }
    for name in args.configs:
        report["configs"][name] = run(model, name, args.rounds, h, w)
        gc.collect()
    return save_report(report, args.out, "large_frames", plot)


if __name__ == "__main__":
    main()
