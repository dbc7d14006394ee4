"""Statistics of built MRSeg files: the seed's Table A1 (conversations, images, max rounds per
source and split) and its Fig. A1 (histogram of rounds per conversation).

Why read the written files and not the builder's counters: the table then describes exactly
what the trainer will read, broken lines included (they are counted and reported, not hidden).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .config import MAX_ROUNDS
from .schema import RecordError, iter_conversations


@dataclass
class SplitStats:
    conversations: int = 0
    images: set = field(default_factory=set)
    rounds: Counter = field(default_factory=Counter)
    """rounds per conversation -> number of conversations"""
    bad_lines: int = 0

    @property
    def max_rounds(self) -> int:
        return max(self.rounds, default=0)


def collect(paths: list[str | Path]) -> dict[tuple[str, str], SplitStats]:
    """(source, split) -> stats over all given files."""
    stats: dict[tuple[str, str], SplitStats] = {}
    for path in paths:
        for _, item in iter_conversations(path):
            if isinstance(item, RecordError):
                stats.setdefault(("<broken>", str(path)), SplitStats()).bad_lines += 1
                continue
            s = stats.setdefault((item.source, item.split), SplitStats())
            s.conversations += 1
            s.images.add(item.image)
            s.rounds[len(item.rounds)] += 1
    return dict(sorted(stats.items()))


def table(stats: dict[tuple[str, str], SplitStats]) -> str:
    """Markdown table shaped like Table A1, plus the rule's round limit and a total row."""
    lines = [
        "| source | split | conversations | images | max rounds | rule limit |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (source, split), s in stats.items():
        if source == "<broken>":
            lines.append(f"| broken lines | {split} | {s.bad_lines} | | | |")
            continue
        limit = MAX_ROUNDS.get(source, "")
        lines.append(
            f"| {source} | {split} | {s.conversations} | {len(s.images)} | "
            f"{s.max_rounds} | {limit} |"
        )
    good = [s for k, s in stats.items() if k[0] != "<broken>"]
    lines.append(
        f"| **total** | | {sum(s.conversations for s in good)} | "
        f"{sum(len(s.images) for s in good)} | "
        f"{max((s.max_rounds for s in good), default=0)} | |"
    )
    return "\n".join(lines)


def histogram(stats: dict[tuple[str, str], SplitStats], out: str | Path) -> Path:
    """Fig. A1: conversations per number of rounds, one bar series per split (log y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_split: dict[str, Counter] = {}
    for (source, split), s in stats.items():
        if source != "<broken>":
            per_split.setdefault(split, Counter()).update(s.rounds)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(per_split))
    for i, (split, counts) in enumerate(sorted(per_split.items())):
        xs = sorted(counts)
        ax.bar([x + i * width for x in xs], [counts[x] for x in xs], width=width, label=split)
    ax.set_xlabel("rounds per conversation")
    ax.set_ylabel("conversations")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("MRSeg: distribution of conversation length")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
