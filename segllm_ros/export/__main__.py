"""``python -m segllm_ros.export --checkpoint DIR --out DIR``"""

from __future__ import annotations

import argparse

from segllm_ros.engine.references import DEFAULT_MAX_REFS
from segllm_ros.export import EXPORT_PRECISIONS, export_checkpoint
from segllm_ros.paths import default_model_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a SegLLM checkpoint to ONNX graphs.")
    parser.add_argument(
        "--checkpoint", default=None, help="checkpoint folder (default: the bundled demo model)"
    )
    parser.add_argument("--out", required=True, help="folder for the graphs and manifest.json")
    parser.add_argument("--precision", default="fp32", choices=sorted(EXPORT_PRECISIONS))
    parser.add_argument(
        "--max-refs",
        type=int,
        default=DEFAULT_MAX_REFS,
        help="most earlier masks referenced in one round (engine max_refs)",
    )
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or str(default_model_path())
    manifest = export_checkpoint(checkpoint, args.out, args.precision, args.max_refs)
    for name, spec in manifest.graphs.items():
        print(
            f"{name:>13}: {spec.file}  in {[(t.name, t.shape) for t in spec.inputs][:2]}"
            f"{' ...' if len(spec.inputs) > 2 else ''}"
        )
    print(
        f"wrote {len(manifest.graphs)} graphs and manifest.json to {args.out} "
        f"(checkpoint {manifest.checkpoint_sha256[:12]})"
    )


if __name__ == "__main__":
    main()
