"""Per-round evaluation of a SegLLM checkpoint on MRSeg conversations (the paper's Table A4).

    python -m segllm_training.eval.evaluate --checkpoint runs/7b/final \\
        --data data/mrseg/refcoco_val.jsonl --image-root data/coco --out eval/7b

Every round runs through the real inference engine, so the numbers are what the node
delivers. Two history protocols: ``ground_truth`` (each earlier round's mask is replaced by
the true mask before the next round: the per-round skill) and ``predicted`` (the model's own
outputs stay in the conversation, as on a robot: errors carry over). Per source, split and
round: cIoU = sum of intersections / sum of unions, gIoU = mean per-sample IoU; where a round
has a distractor (a tabletop twin), "twin choice" = share of predictions overlapping the
target more than the distractor.
"""

from __future__ import annotations

import argparse
import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine, load_engine
from segllm_ros.engine.history import Frame
from segllm_training.mrseg.schema import decode_mask
from segllm_training.trainer.data import DataError, Item, Source, SourceConfig

HISTORIES = ("ground_truth", "predicted")


@dataclass
class RoundOutcome:
    round: int
    prediction: np.ndarray
    truth: np.ndarray
    distractor: np.ndarray | None = None

    @property
    def intersection(self) -> int:
        return int((self.prediction & self.truth).sum())

    @property
    def union(self) -> int:
        return int((self.prediction | self.truth).sum())

    @property
    def iou(self) -> float:
        """1.0 when prediction and truth are both empty (nothing to find, nothing found)."""
        return self.intersection / self.union if self.union else 1.0

    @property
    def twin_hit(self) -> bool | None:
        if self.distractor is None:
            return None
        return self.intersection > int((self.prediction & self.distractor).sum())


@dataclass
class RoundStats:
    intersection: int = 0
    union: int = 0
    ious: list[float] = field(default_factory=list)
    twin_hits: int = 0
    twin_total: int = 0

    def add(self, outcome: RoundOutcome) -> None:
        self.intersection += outcome.intersection
        self.union += outcome.union
        self.ious.append(outcome.iou)
        if outcome.twin_hit is not None:
            self.twin_total += 1
            self.twin_hits += int(outcome.twin_hit)

    def merge(self, other: RoundStats) -> None:
        self.intersection += other.intersection
        self.union += other.union
        self.ious += other.ious
        self.twin_hits += other.twin_hits
        self.twin_total += other.twin_total

    @property
    def ciou(self) -> float:
        return self.intersection / self.union if self.union else float("nan")

    @property
    def giou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else float("nan")

    @property
    def twin_choice(self) -> float:
        return self.twin_hits / self.twin_total if self.twin_total else float("nan")


@dataclass
class Report:
    """Stats per (source, split) and round (1-based)."""

    groups: dict[tuple[str, str], dict[int, RoundStats]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    def add(self, source: str, split: str, outcome: RoundOutcome) -> None:
        self.groups[(source, split)].setdefault(outcome.round, RoundStats()).add(outcome)

    def rounds(
        self, source: str | None = None, split: str | None = None, from_round: int = 1
    ) -> dict[int, RoundStats]:
        """Stats per round over the matching groups (all when source/split are None)."""
        merged: dict[int, RoundStats] = {}
        for (src, spl), per_round in self.groups.items():
            if (source is None or src == source) and (split is None or spl == split):
                for r, stats in per_round.items():
                    if r >= from_round:
                        merged.setdefault(r, RoundStats()).merge(stats)
        return dict(sorted(merged.items()))

    def overall(self, from_round: int = 1) -> RoundStats:
        total = RoundStats()
        for stats in self.rounds(from_round=from_round).values():
            total.merge(stats)
        return total

    def summary(self) -> dict:
        out: dict = {}
        for source, split in sorted(self.groups):
            per_round = self.rounds(source, split)
            out[f"{source}/{split}"] = {
                str(r): {
                    "ciou": s.ciou,
                    "giou": s.giou,
                    "n": len(s.ious),
                    **(
                        {"twin_choice": s.twin_choice, "twin_n": s.twin_total}
                        if s.twin_total
                        else {}
                    ),
                }
                for r, s in per_round.items()
            }
        return out


def run_conversation(
    engine: SegLLMEngine, item: Item, history: str, conv_id: str, max_rounds: int | None = None
) -> list[RoundOutcome]:
    """Play one conversation through ``engine`` round by round."""
    if history not in HISTORIES:
        raise ValueError(f"history must be one of {HISTORIES}, got {history!r}")
    engine.reset(conv_id)
    frame = Frame.create(item.image, zlib.crc32(conv_id.encode()) + 1, item.record.source)
    outcomes = []
    try:
        for i, rnd in enumerate(item.record.rounds[:max_rounds], start=1):
            truth = decode_mask(rnd.mask)
            result = engine.segment(conv_id, rnd.query, frame, ref_rounds=rnd.ref_rounds)
            outcomes.append(RoundOutcome(i, result.mask, truth, item.distractors.get(i)))
            if history == "ground_truth":
                engine.correct_last_round(conv_id, truth)
    finally:
        engine.reset(conv_id)
    return outcomes


def evaluate_items(
    engine: SegLLMEngine,
    items: Iterable[Item],
    histories: Iterable[str],
    max_rounds: int | None = None,
) -> dict[str, Report]:
    """One report per history protocol, in a single pass over ``items`` (each image is
    loaded once, whatever the number of protocols)."""
    reports = {h: Report() for h in histories}
    for n, item in enumerate(items):
        for history, report in reports.items():
            for outcome in run_conversation(engine, item, history, f"eval-{n}", max_rounds):
                report.add(item.record.source, item.record.split, outcome)
    return reports


def report_rows(reports: dict[str, Report]) -> dict[str, dict[int, RoundStats]]:
    """Table rows: one per report, or one per (report, source/split) when a report covers
    several sources or splits."""
    rows = {}
    for name, report in reports.items():
        if len(report.groups) <= 1:
            rows[name] = report.rounds()
        else:
            for source, split in sorted(report.groups):
                rows[f"{name}: {source}/{split}"] = report.rounds(source, split)
    return rows


def table(
    rows: dict[str, dict[int, RoundStats]],
    metric: str = "ciou",
    max_rounds: int = 8,
    from_round: int = 1,
) -> str:
    """Markdown table shaped like Table A4: one row per method / protocol, one column per
    round; ``metric`` = ciou | giou | twin_choice, in percent."""
    header = "| | " + " | ".join(f"R{r}" for r in range(from_round, max_rounds + 1)) + " |"
    lines = [header, "|---" * (max_rounds - from_round + 2) + "|"]
    for name, per_round in rows.items():
        cells = []
        for r in range(from_round, max_rounds + 1):
            value = getattr(per_round[r], metric) if r in per_round else float("nan")
            cells.append("–" if np.isnan(value) else f"{100 * value:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(
    reports: dict[str, Report], path: str | Path, metric: str = "ciou", title: str = ""
) -> None:
    """Per-round curve of ``metric`` for each report (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, report in reports.items():
        per_round = report.rounds()
        xs = [r for r, s in per_round.items() if not np.isnan(getattr(s, metric))]
        ax.plot(xs, [100 * getattr(per_round[r], metric) for r in xs], marker="o", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title or f"per-round {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(
    reports: dict[str, Report], out: str | Path, title: str = "", max_rounds: int = 8
) -> str:
    """``results.json``, ``table.md`` (cIoU and gIoU tables) and ``rounds.png`` in ``out``;
    returns the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = report_rows(reports)
    markdown = "\n\n".join(
        f"{name}\n\n{table(rows, metric, max_rounds)}"
        for name, metric in (("cIoU (%)", "ciou"), ("gIoU (%)", "giou"))
    )
    (out / "table.md").write_text(markdown + "\n")
    (out / "results.json").write_text(
        json.dumps({name: r.summary() for name, r in reports.items()}, indent=2)
    )
    plot(reports, out / "rounds.png", title=title)
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="project checkpoint folder")
    parser.add_argument("--data", required=True, nargs="+", help="MRSeg JSONL file(s)")
    parser.add_argument("--image-root", default=".")
    parser.add_argument("--history", choices=(*HISTORIES, "both"), default="both")
    parser.add_argument(
        "--lisa",
        choices=("approach1", "approach2"),
        help="evaluate on a LISA conversion of the data",
    )
    parser.add_argument("--limit", type=int, help="conversations per file")
    parser.add_argument("--max-rounds", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--out", default="eval")
    args = parser.parse_args(argv)
    engine = load_engine(
        args.checkpoint,
        device=args.device,
        precision=args.precision,
        max_rounds=max(args.max_rounds, 1),
    )
    if args.lisa:  # a model trained without reference input gets none here either
        engine.config = EngineConfig(blank_references=True)
    skipped: Counter = Counter()  # corrupt records, counted on reading
    sources = [
        Source(SourceConfig(path=p, image_root=args.image_root, lisa=args.lisa), skipped)
        for p in args.data
    ]

    def items() -> Iterator[Item]:
        """Conversations streamed (images are loaded one at a time), broken ones skipped."""
        for source in sources:
            for i in range(min(len(source), args.limit or len(source))):
                try:
                    yield source.load(i)
                except DataError as exc:
                    print(f"skipping: {exc}")
                    skipped["missing_image"] += 1

    histories = HISTORIES if args.history == "both" else (args.history,)
    reports = evaluate_items(engine, items(), histories, args.max_rounds)
    if skipped:
        print(f"skipped conversations: {dict(skipped)}")
    print(
        write_reports(
            reports, args.out, title=Path(args.checkpoint).name, max_rounds=args.max_rounds
        )
    )


if __name__ == "__main__":
    main()
