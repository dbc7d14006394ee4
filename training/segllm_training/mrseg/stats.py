"""Statistics of built MRSeg files: the seed's Table A1 (conversations, images, max rounds per
source and split), its Fig. A1 (histogram of rounds per conversation) and the share of
positional rounds that are ambiguous (issue 17: the size of the seed's one-mask limitation).

Why read the written files and not the builder's counters: the table then describes exactly
what the trainer will read, broken lines included (they are counted and reported, not hidden).
Ambiguity is the exception: a default build keeps ambiguous rounds unmarked (its file is the
seed's), so the build writes its counts next to the file (:func:`build_report_path`) and the
stats read them from there.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .config import MAX_ROUNDS
from .generators.ambiguity import AMBIGUOUS_ROUNDS, POSITIONAL_ROUNDS
from .schema import RecordError, iter_conversations


def build_report_path(out: str | Path) -> Path:
    """Where a build writes its report (counts, ambiguity) next to its conversation file."""
    return Path(out).with_suffix(".build.json")


_MODE_WORDS = {"keep": "kept", "drop": "made self queries", "multi": "multi-target"}
"""What each ``BuildConfig.ambiguous`` does with an ambiguous round, for the reports."""


def ambiguity_line(positional: int, ambiguous: int, mode: str) -> str:
    """ "3 of 12 positional rounds ambiguous (25.0%, kept)": the build's one-line report."""
    return (
        f"{ambiguous} of {positional} positional rounds ambiguous "
        f"({100 * ambiguous / positional:.1f}%, {_MODE_WORDS[mode]})"
    )


@dataclass
class SplitStats:
    conversations: int = 0
    images: set = field(default_factory=set)
    rounds: Counter = field(default_factory=Counter)
    """rounds per conversation -> number of conversations"""
    bad_lines: int = 0
    positional_rounds: int = 0
    """Rounds relating their target to an earlier round's, from the build reports."""
    ambiguous_rounds: int = 0
    """Those of them that several instances satisfy (whatever ``ambiguous`` did with them)."""
    modes: set = field(default_factory=set)
    """``BuildConfig.ambiguous`` of the builds (keep, drop, multi)."""

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
        report = build_report_path(path)
        if report.is_file():
            try:
                data = json.loads(report.read_text())
                s = stats.setdefault((data["source"], data["split"]), SplitStats())
                s.positional_rounds += data[POSITIONAL_ROUNDS]
                s.ambiguous_rounds += data[AMBIGUOUS_ROUNDS]
                s.modes.add(data["ambiguous"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{report}: broken build report: {exc!r}") from None
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


def ambiguity_table(stats: dict[tuple[str, str], SplitStats]) -> str:
    """Markdown table: per source and split with positional rounds, how many of them (and what
    share) more than one instance satisfies; files without a build report are left out, and
    without any row the table is empty ("")."""
    lines = [
        "| source | split | positional rounds | ambiguous | share | ambiguous rounds were |",
        "|---|---|---:|---:|---:|---|",
    ]
    for (source, split), s in stats.items():
        if s.positional_rounds:
            share = 100 * s.ambiguous_rounds / s.positional_rounds
            modes = "+".join(_MODE_WORDS[m] for m in sorted(s.modes))
            lines.append(
                f"| {source} | {split} | {s.positional_rounds} | {s.ambiguous_rounds} | "
                f"{share:.1f}% | {modes} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


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
