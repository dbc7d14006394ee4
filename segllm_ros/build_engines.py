"""``python -m segllm_ros.build_engines --onnx DIR --precision fp16`` — build (or reuse) the
TensorRT engines of an export on this machine, e.g. once on a Jetson before the node runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from segllm_ros.runtime.tensorrt import TRT_PRECISIONS, build_engines


def read_frames(folder: Path, limit: int) -> list:
    """RGB sample frames (png/jpg) for int8 calibration."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files[:limit]]
    if not frames:
        raise SystemExit(f"no .png/.jpg frames in {folder}")
    return frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="export folder (manifest.json)")
    parser.add_argument("--precision", default="fp16", choices=TRT_PRECISIONS)
    parser.add_argument(
        "--cache", type=Path, default=None, help="engine cache folder (default: <onnx>/engines)"
    )
    parser.add_argument(
        "--workspace-gb",
        type=float,
        default=4.0,
        help="TensorRT builder workspace limit (GiB); 1-2 on an Orin Nano",
    )
    parser.add_argument(
        "--calibration-frames",
        type=Path,
        default=None,
        help="folder of sample camera frames for int8 calibration",
    )
    parser.add_argument("--calibration-count", type=int, default=64)
    parser.add_argument("--force", action="store_true", help="rebuild cached engines")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index")
    args = parser.parse_args(argv)
    frames = (
        read_frames(args.calibration_frames, args.calibration_count)
        if args.calibration_frames
        else None
    )
    paths = build_engines(
        args.onnx, args.precision, args.cache, args.workspace_gb, frames, args.force, args.device
    )
    for name, path in paths.items():
        print(f"{name:>13}: {path}")


if __name__ == "__main__":
    main()
