"""MRSeg build throughput: conversations per second on a RefCOCO-sized synthetic set,
1 vs 2 worker processes.

    .venv/bin/python bench/mrseg_build.py [--images 20000] [--workers 1 2] --out bench/results

Why: ``build`` parallelises over images with multiprocessing; this measures whether that pays
on this machine, on the real path a user runs: the CLI (``python -m segllm_training.mrseg
build``) in a fresh process, reading a ``refs(unc).p`` + ``instances.json`` pair written in the
real format (about 20k images like RefCOCO, 2-7 ellipse objects each, polygons decoded by
pycocotools), writing JSON Lines. The CLI runs from this checkout (``training/`` and the root
first on ``PYTHONPATH``).
Reported per worker count: wall seconds (median of ``--repeats``), conversations, conv/s,
and the output's SHA-256 (the same for every worker count: the build is deterministic).
The machine may be shared (other jobs): medians, and the CPU count is recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "training"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def write_dataset(root: Path, images: int, seed: int) -> dict:
    sys.path[:0] = [str(ROOT / "training"), str(ROOT)]
    import numpy as np

    from segllm_training.mrseg.fixtures import write_refer

    start = time.perf_counter()
    write_refer(root, np.random.default_rng(seed), images)
    data = json.loads((root / "instances.json").read_text())
    return {
        "images": len(data["images"]),
        "annotations": len(data["annotations"]),
        "write_s": round(time.perf_counter() - start, 2),
    }


def run_build(root: Path, out: Path, workers: int, env: dict[str, str]) -> tuple[float, str]:
    cmd = [
        sys.executable,
        "-m",
        "segllm_training.mrseg",
        "build",
        "--source",
        "refcoco",
        "--root",
        str(root),
        "--split",
        "train",
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--no-progress",
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"build failed:\n{done.stderr}")
    return wall, done.stdout.strip()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = _env()
        dataset = write_dataset(tmp / "refcoco", args.images, args.seed)
        runs = []
        for workers in args.workers:
            walls = []
            for r in range(args.repeats):
                out = tmp / f"out_{workers}_{r}.jsonl"
                wall, summary = run_build(tmp / "refcoco", out, workers, env)
                walls.append(wall)
            conversations = sum(1 for _ in out.open())
            median = statistics.median(walls)
            runs.append(
                {
                    "workers": workers,
                    "wall_s": [round(w, 2) for w in walls],
                    "median_s": round(median, 2),
                    "conversations": conversations,
                    "conversations_per_s": round(conversations / median, 1),
                    "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
                    "cli_summary": summary,
                }
            )
            print(
                f"workers={workers}: {conversations} conversations in {median:.1f} s "
                f"= {conversations / median:.0f} conv/s"
            )
    report = {
        "benchmark": "mrseg_build",
        "source": "refcoco (synthetic, real file format)",
        "dataset": dataset,
        "runs": runs,
        "same_output_for_all_worker_counts": len({r["sha256"] for r in runs}) == 1,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "note": "wall time of the whole CLI process (start, read, generate, write); "
        "the machine may be shared with other jobs",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mrseg_build.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'mrseg_build.json'}")
    return report


if __name__ == "__main__":
    main()
