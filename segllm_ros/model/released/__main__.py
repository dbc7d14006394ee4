"""``python -m segllm_ros.model.released FOLDER``: what loading a released SegLLM folder would
find, from its config, index and safetensors headers only (no 15 GB read): missing,
unexpected and ignored tensors, shapes, dtypes, alias pairs. ``--export-decoder DIR`` then
writes HIPIE's two ONNX graphs from the folder's weights (NMS stays outside the graphs)."""

from __future__ import annotations

import argparse
import sys

from segllm_ros.export.hipie import export_hipie
from segllm_ros.model.released.model import ReleasedSegLLM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the released checkpoint folder (config.json + weights)")
    parser.add_argument(
        "--vision-tower",
        default=None,
        help="local CLIP folder, when the weights do not hold the tower",
    )
    parser.add_argument(
        "--export-decoder", metavar="DIR", help="write hipie_image.onnx + hipie_round.onnx here"
    )
    args = parser.parse_args(argv)
    report = ReleasedSegLLM.dry_run(args.folder, args.vision_tower)
    print(report.summary())
    if not report.ok:
        return 1
    if args.export_decoder:
        paths = export_hipie(ReleasedSegLLM.load_segmentator(args.folder), args.export_decoder)
        for name, path in paths.items():
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
