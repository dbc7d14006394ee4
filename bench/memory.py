"""Memory a live conversation keeps, and 100 of them, per backend.

    .venv/bin/python bench/memory.py --out bench/results [--rounds 8] [--conversations 100]

Why: conversations are kept between rounds (KV cache, reference tokens, recorded masks and
frames), so their size decides how many a robot can hold. ``SegLLMEngine.history_nbytes``
counts the bytes of each part; the process's resident memory before and after 100
conversations is reported beside it as a cross-check (it also sees allocator slack).
The 100 conversations share one frame, as on a robot answering several operators on one
camera; the frame is counted once per conversation in ``history`` (an upper bound).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from rounds import (  # bench/rounds.py: also puts the source tree first
    bench_parser,
    bench_runtime,
    machine_info,
    run_conversation,
    save_report,
    script_conversation,
)

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine
from segllm_ros.engine.history import Frame
from segllm_ros.engine.store import ConversationStore
from segllm_ros.paths import default_model_path
from segllm_training.tabletop import TabletopConfig, generate_scene

BACKENDS = ("torch", "onnxruntime")
PARTS = ("kv_cache", "ref_tokens", "history")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(runtime, frame: Frame, turns, conversations: int) -> dict[str, Any]:
    engine = SegLLMEngine(
        runtime,
        EngineConfig(),
        ConversationStore(max_conversations=conversations + 1, max_rounds=len(turns), ttl_s=0),
    )
    per_round = []
    for i, turn in enumerate(turns):
        engine.segment("one", turn.query, frame, list(turn.ref_rounds))
        per_round.append({"round": i + 1, **engine.history_nbytes("one")})
    engine.reset("")
    before = rss_bytes()
    for c in range(conversations):
        run_conversation(engine, f"c{c}", frame, turns)
    sizes = [engine.history_nbytes(f"c{c}") for c in range(conversations)]
    total = {p: sum(s[p] for s in sizes) for p in PARTS}
    return {
        "per_round": per_round,
        "conversations": conversations,
        "total_bytes": total,
        "total_bytes_all_parts": sum(total.values()),
        "rss_growth_bytes": rss_bytes() - before,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report["backends"]), figsize=(9, 4), sharey=True)
    for ax, (backend, res) in zip(np.atleast_1d(axes), report["backends"].items(), strict=True):
        rounds = [r["round"] for r in res["per_round"]]
        bottom = np.zeros(len(rounds))
        for part in PARTS:
            kib = np.array([r[part] for r in res["per_round"]]) / 1024
            ax.bar(rounds, kib, bottom=bottom, label=part)
            bottom += kib
        ax.set_title(
            f"{backend}: 100 conv. = {res['total_bytes_all_parts'] / 2**20:.1f} MiB "
            f"(RSS +{res['rss_growth_bytes'] / 2**20:.1f} MiB)",
            fontsize=9,
        )
        ax.set_xlabel("round")
        ax.grid(alpha=0.3, axis="y")
    np.atleast_1d(axes)[0].set_ylabel("KiB kept by one conversation")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    parser = bench_parser(__doc__, rounds=8)
    parser.add_argument("--conversations", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model_path = args.model or default_model_path()
    scene = generate_scene(np.random.default_rng(0), TabletopConfig())
    frame = Frame.create(scene.image, 1, "bench_table")
    turns = script_conversation([o.name for o in scene.objects], args.rounds)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "model": str(model_path),
        "frame_hw": [frame.height, frame.width],
        "backends": {},
    }
    for backend in BACKENDS:
        runtime = bench_runtime(model_path, backend, None, args.out)
        res = measure(runtime, frame, turns, args.conversations)
        report["backends"][backend] = res
        last = res["per_round"][-1]
        print(
            f"{backend:>12}: one conversation after {args.rounds} rounds: "
            + ", ".join(f"{p} {last[p] / 1024:.1f} KiB" for p in PARTS)
            + f"; {args.conversations} conversations: "
            f"{res['total_bytes_all_parts'] / 2**20:.2f} MiB counted, RSS "
            f"+{res['rss_growth_bytes'] / 2**20:.2f} MiB"
        )
    return save_report(report, args.out, "memory", plot)


if __name__ == "__main__":
    main()
