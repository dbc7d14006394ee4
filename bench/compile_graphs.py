"""What ``compile_graphs`` costs at configure and saves per round, on this machine (issue 20).

    .venv/bin/python bench/compile_graphs.py --out bench/results [--rounds 12]

The demo model three ways in one run: eager, compiled into an empty cache folder (cold
configure), and compiled again from that folder in a new process (a restart: warm configure;
within one process dynamo's in-memory code would answer instead). Then ``--rounds``
held-out tabletop conversations, three rounds each, through the engine with the eager and the
warm compiled runtime: per-round image-encoder and mask-decoder times (the engine's
``timings_ms``; the image encoders run on the first round of a frame) and whether both give the
same masks. JSON + PNG.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rounds import bench_parser, machine_info, save_report  # puts the source tree first

from segllm_ros.engine.engine import SegLLMEngine
from segllm_ros.engine.history import Frame
from segllm_ros.paths import default_model_path
from segllm_ros.runtime.registry import load_runtime
from segllm_training.eval.tabletop_eval import held_out


def _load(model: Path, **options: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    runtime = load_runtime(str(model), **options)
    return runtime, time.perf_counter() - start


RESTART = """
import json, sys, time
from segllm_ros.runtime.registry import load_runtime
start = time.perf_counter()
runtime = load_runtime(sys.argv[1], compile_graphs=True, compile_cache_dir=sys.argv[2])
print(json.dumps([time.perf_counter() - start, runtime.compile_report.summary()]))
"""


def _restart(model: Path, cache: str) -> tuple[float, str]:
    """Configure seconds and compile report of a fresh process on the same cache folder."""
    out = subprocess.run(
        [sys.executable, "-c", RESTART, str(model), cache],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    seconds, summary = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, summary


def _play(runtime: Any, conversations: list) -> tuple[dict[str, list[float]], list[np.ndarray]]:
    """First-round image time, every round's mask time, every round's mask."""
    engine = SegLLMEngine(runtime)
    times: dict[str, list[float]] = {"image_ms": [], "mask_ms": []}
    masks = []
    for n, conv in enumerate(conversations):
        frame = Frame.create(conv.scene.image, n + 1, "table")
        for i, rnd in enumerate(conv.rounds[:3]):
            result = engine.segment(f"c{n}", rnd.query, frame, ref_rounds=rnd.ref_rounds)
            if i == 0:
                times["image_ms"].append(result.timings_ms["image"])
            times["mask_ms"].append(result.timings_ms["mask"])
            masks.append(result.mask)
        engine.reset(f"c{n}")
    return times, masks


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    names = ["image_ms", "mask_ms"]
    x = np.arange(len(names))
    for j, mode in enumerate(("eager", "compiled")):
        ax.bar(x + 0.35 * j, [report[mode][n] for n in names], 0.35, label=mode)
    ax.set_xticks(x + 0.175, ["image encoders", "mask decoder"])
    ax.set_ylabel("median ms per round")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    args = bench_parser(__doc__, rounds=12).parse_args()
    model = args.model or default_model_path()
    conversations = held_out(args.rounds)
    eager, _ = _load(model)
    with tempfile.TemporaryDirectory() as cache:
        compiled, cold_s = _load(model, compile_graphs=True, compile_cache_dir=cache)
        cold_text = compiled.compile_report.summary()
        warm_s, warm_text = _restart(model, cache)
    eager_times, eager_masks = _play(eager, conversations)
    compiled_times, compiled_masks = _play(compiled, conversations)
    same = sum(np.array_equal(a, b) for a, b in zip(eager_masks, compiled_masks, strict=True))
    report = {
        "machine": machine_info(),
        "configure_s": {"cold": cold_s, "warm": warm_s},
        "compile_report": {"cold": cold_text, "warm": warm_text},
        "eager": {k: float(np.median(v)) for k, v in eager_times.items()},
        "compiled": {k: float(np.median(v)) for k, v in compiled_times.items()},
        "same_masks": f"{same} of {len(eager_masks)}",
    }
    save_report(report, args.out, "compile_graphs", plot)
    print({k: v for k, v in report.items() if k != "machine"})


if __name__ == "__main__":
    main()
