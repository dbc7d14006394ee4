"""How often MRSeg's positional rounds are ambiguous, per source (issue 17).

    .venv/bin/python bench/mrseg_ambiguity.py --out bench/results [--seeds 200]

Builds the test fixtures of every source (train and val) with the default config, and the
real VOC photo with its masks (``test/mrseg``: one conversation per seed) in the three
``ambiguous`` modes; prints the build reports' ambiguity tables and writes them as JSON. A
round is ambiguous when more than one instance of its target class has its relation to the
reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "training"), str(ROOT / "test"), str(ROOT / "test/mrseg")]

from mrseg_data import SOURCE_DIRS, tiny_config, write_all  # noqa: E402
from test_mrseg_voc import write_voc_as_refcoco  # noqa: E402

from segllm_training.mrseg.build import build  # noqa: E402
from segllm_training.mrseg.config import BuildConfig  # noqa: E402
from segllm_training.mrseg.schema import read_conversations  # noqa: E402
from segllm_training.mrseg.stats import ambiguity_table, collect  # noqa: E402

MODES = ("keep", "drop", "multi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    report: dict = {"seeds": args.seeds}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = write_all(work / "data")
        files = []
        for source, folder in sorted(SOURCE_DIRS.items()):
            for split in ("train", "val"):
                files.append(work / f"{source}_{split}.jsonl")
                build(source, data / folder, split, files[-1], tiny_config(), progress=False)
        report["fixtures"] = ambiguity_table(collect(files))
        print("fixtures (keep):\n" + report["fixtures"])
        write_voc_as_refcoco(work / "voc")
        for mode in MODES:
            voc, targets = [], Counter()
            for seed in range(args.seeds):
                voc.append(work / f"voc_{mode}_{seed}.jsonl")
                config = BuildConfig(seed=seed, ambiguous=mode)
                build("refcoco", work / "voc", "train", voc[-1], config, progress=False)
                for record in read_conversations(voc[-1]):
                    targets.update(len(r.targets) if r.targets else 1 for r in record.rounds)
            row = ambiguity_table(collect(voc)).splitlines()[-1]
            report[f"voc_{mode}"] = {"row": row, "rounds_by_targets": dict(sorted(targets.items()))}
            print(f"VOC photo, seeds 0-{args.seeds - 1}, {mode}: {row}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mrseg_ambiguity.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
