"""Node overhead per frame against the floor of one memcpy of the frame.

    .venv/bin/python bench/node_overhead.py --out bench/results [--repeats 200]

Why: on a robot the model should be the only real cost of a round. What the node adds per
frame is turning the ``sensor_msgs/Image`` into the model's input (HxWx3 RGB uint8, one fresh
copy the conversation can keep) and the mask back into a ``mono8`` message, both through the
project's codecs (``segllm_ros.interface``). The floor is one ``memcpy`` of the frame into a
preallocated buffer: no conversion can touch every pixel for less. Target: overhead
<= 2 x floor at 1920x1080.

Method: a random frame (as a camera publishes it, rgb8 and bgr8) and an elliptical mask per
resolution; each step is timed ``--repeats`` times with ``time.perf_counter``, interleaved,
after a warm-up; medians (and minima) are reported; one thread (NumPy/OpenCV).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rounds import ROOT, machine_info  # bench/rounds.py: also puts the source tree first

from segllm_ros.interface.image_codec import fill_image_msg, image_from_msg
from segllm_ros.interface.mask_codec import fill_mask_msg

RESOLUTIONS = ((640, 480), (1280, 720), (1920, 1080))
ENCODINGS = ("rgb8", "bgr8")
TARGET = 2.0
"""overhead / floor at 1920x1080 must not exceed this."""


def measure(width: int, height: int, repeats: int) -> dict[str, Any]:
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 5, height // 4), 0, 0, 360, 1, -1)
    mask = mask.astype(bool)
    msgs = {
        enc: fill_image_msg(Image(), frame if enc == "rgb8" else frame[..., ::-1], enc)
        for enc in ENCODINGS
    }
    dst = np.empty_like(frame)
    steps = {
        "floor_memcpy": lambda: np.copyto(dst, frame),
        **{f"decode_{enc}": (lambda m=m: image_from_msg(m)) for enc, m in msgs.items()},
        "mask_to_msg": lambda: fill_mask_msg(Image(), mask),
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(10):  # warm-up
        for fn in steps.values():
            fn()
    for _ in range(repeats):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    row: dict[str, Any] = {
        "resolution": f"{width}x{height}",
        "frame_bytes": frame.nbytes,
        "median_ms": med,
        "min_ms": {k: min(v) for k, v in times.items()},
    }
    for enc in ENCODINGS:
        overhead = med[f"decode_{enc}"] + med["mask_to_msg"]
        row[f"overhead_{enc}_ms"] = overhead
        row[f"overhead_{enc}_over_floor"] = overhead / med["floor_memcpy"]
    return row


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x = np.arange(len(rows))
    floor = [r["median_ms"]["floor_memcpy"] for r in rows]
    ax.bar(x - 0.27, floor, 0.25, color="0.6", label="floor: one memcpy of the frame")
    for i, enc in enumerate(ENCODINGS):
        dec = [r["median_ms"][f"decode_{enc}"] for r in rows]
        msk = [r["median_ms"]["mask_to_msg"] for r in rows]
        pos = x + (0.0 if i == 0 else 0.27)
        ax.bar(pos, dec, 0.25, color=("tab:blue", "tab:cyan")[i], label=f"Image ({enc}) -> input")
        ax.bar(
            pos,
            msk,
            0.25,
            bottom=dec,
            color=("tab:orange", "gold")[i],
            label="mask -> mono8 message" if i == 0 else None,
        )
        for px, r in zip(pos, rows, strict=True):
            ratio = r[f"overhead_{enc}_over_floor"]
            ax.annotate(
                f"{ratio:.2f}x",
                (px, r[f"overhead_{enc}_ms"]),
                ha="center",
                textcoords="offset points",
                xytext=(0, 3),
                fontsize=8,
            )
    ax.hlines(
        [TARGET * f for f in floor],
        x - 0.4,
        x + 0.4,
        colors="tab:red",
        linestyles="--",
        lw=1,
        label=f"target: {TARGET:g} x floor",
    )
    ax.set_xticks(x, [r["resolution"] for r in rows])
    ax.set_ylabel("ms per frame (median)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    rows = [measure(w, h, args.repeats) for w, h in RESOLUTIONS]
    worst = max(rows[-1][f"overhead_{enc}_over_floor"] for enc in ENCODINGS)
    report = {
        "machine": machine_info(),
        "repeats": args.repeats,
        "rows": rows,
        "target": {
            "overhead_over_floor_at_1080p": f"<= {TARGET}",
            "value": worst,
            "pass": worst <= TARGET,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "node_overhead.json").write_text(json.dumps(report, indent=1))
    plot(
        rows,
        args.out / "node_overhead.png",
        f"Node overhead per frame vs one memcpy, {report['machine']['cpu_model']}",
    )
    print(
        f"{'resolution':>10} | {'memcpy':>7} | "
        + " | ".join(f"{'decode ' + e:>12}" for e in ENCODINGS)
        + f" | {'mask->msg':>9} | x floor (rgb8, bgr8)"
    )
    for r in rows:
        m = r["median_ms"]
        print(
            f"{r['resolution']:>10} | {m['floor_memcpy']:7.3f} | "
            + " | ".join(f"{m['decode_' + e]:12.3f}" for e in ENCODINGS)
            + f" | {m['mask_to_msg']:9.3f} | "
            + ", ".join(f"{r[f'overhead_{e}_over_floor']:.2f}" for e in ENCODINGS)
        )
    print(
        f"1080p overhead / floor = {worst:.2f} (target <= {TARGET:g}: "
        f"{'pass' if worst <= TARGET else 'FAIL'})"
    )
    return report


if __name__ == "__main__":
    main()
