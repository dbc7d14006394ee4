"""Build one source's conversations: read and validate, generate per image in worker
processes, write JSON Lines.

Why per-image work units: decoding masks (and SAM for Visual Genome) dominates the cost and
images are independent, so ``multiprocessing`` over images scales with cores while the
per-image seeds (:func:`generators.common.image_rng`) keep the output identical for any
``--workers``; ``imap`` keeps the input order, so the file is byte-identical too.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .config import BuildConfig
from .entries import BadRecords, ImageEntry, SourceError
from .generators.ambiguity import AMBIGUOUS_ROUNDS, POSITIONAL_ROUNDS
from .generators.common import image_rng
from .schema import ConversationRecord, write_conversations
from .sources import SOURCES, Source
from .stats import build_report_path

_STATE: tuple[Source, BuildConfig] | None = None


class BuildError(ValueError):
    """An image failed to generate; the message names its annotation file and image id."""


@dataclass
class BuildReport:
    images: int = 0
    conversations: int = 0
    skipped: list[str] = field(default_factory=list)
    """Messages (file, record) of inputs skipped under ``skip_bad``."""
    tally: Counter = field(default_factory=Counter)
    """The generators' counts over all images (positional: relational and ambiguous rounds)."""


def _init(name: str, cfg: BuildConfig, forked: bool = False) -> None:
    global _STATE
    _STATE = (SOURCES[name], cfg)
    if forked and "torch" in sys.modules:
        # A child forked from a parent whose OpenMP pool is running hangs in its first
        # parallel region (libgomp is not fork-safe); one thread never enters one.
        sys.modules["torch"].set_num_threads(1)


def _work(entry: ImageEntry) -> tuple[list[ConversationRecord], Counter, str | None]:
    """Conversations of one image and the generator's tally, or the error naming its file and
    image."""
    source, cfg = _STATE  # type: ignore[misc]
    tally: Counter = Counter()
    try:
        if source.expand is not None:
            entry = source.expand(entry)
        rng = image_rng(cfg.seed, source.name, entry.image_id)
        return source.generate(entry, rng, cfg, source.name, tally), tally, None
    except (SourceError, ValueError, OSError, KeyError, TypeError) as exc:
        return [], Counter(), f"{entry.source_file} [image {entry.image_id}]: {exc}"


def read_source(
    name: str,
    root: str | Path,
    split: str,
    skip_bad: bool = False,
    limit: int | None = None,
    cfg: BuildConfig | None = None,
) -> tuple[list[ImageEntry], list[str]]:
    """Validated entries of a source's split (first ``limit``) and the skipped-record
    messages; ``cfg`` gives the split rule of sources without official splits."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; one of {sorted(SOURCES)}")
    source, bad = SOURCES[name], BadRecords(skip_bad)
    entries = source.read(Path(root), split, bad)
    if source.split_of is not None:
        entries = [e for e in entries if source.split_of(e, cfg or BuildConfig()) == split]
    return (entries[:limit] if limit else entries), bad.errors


def generate(
    name: str,
    entries: list[ImageEntry],
    cfg: BuildConfig,
    workers: int = 1,
    skip_bad: bool = False,
    report: BuildReport | None = None,
    progress: bool = True,
) -> Iterator[ConversationRecord]:
    """Conversations in input order; raises ``SourceError`` on the first bad image unless
    ``skip_bad`` (then the message goes to ``report.skipped``)."""
    report = report if report is not None else BuildReport()
    bar = tqdm(total=len(entries), desc=name, unit="img", disable=not progress)
    if workers > 1:
        ctx = multiprocessing.get_context("fork")
        pool = ctx.Pool(workers, initializer=_init, initargs=(name, cfg, True))
        results = pool.imap(
            _work, entries, chunksize=max(1, min(64, len(entries) // (8 * workers)))
        )
    else:
        pool = None
        _init(name, cfg)
        results = map(_work, entries)
    try:
        for records, tally, error in results:
            bar.update(1)
            report.images += 1
            if error is not None:
                if not skip_bad:
                    raise BuildError(error)
                report.skipped.append(error)
                continue
            report.conversations += len(records)
            report.tally.update(tally)
            yield from records
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()


def build(
    name: str,
    root: str | Path,
    split: str,
    out: str | Path,
    cfg: BuildConfig | None = None,
    workers: int = 1,
    limit: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Read, generate and write one source/split, and its report next to it
    (:func:`stats.build_report_path`); returns counts and skipped records."""
    cfg = cfg or BuildConfig()
    if name in SOURCES and SOURCES[name].needs_sam:
        cfg.sam_weights()  # refuse before reading: Visual Genome's files take minutes
    entries, skipped = read_source(name, root, split, skip_bad, limit, cfg)
    report = BuildReport(skipped=skipped)
    write_conversations(out, generate(name, entries, cfg, workers, skip_bad, report, progress))
    summary = {
        "source": name,
        "split": split,
        "images": report.images,
        "conversations": report.conversations,
        "skipped": len(report.skipped),
        "ambiguous": cfg.ambiguous,
        POSITIONAL_ROUNDS: report.tally[POSITIONAL_ROUNDS],
        AMBIGUOUS_ROUNDS: report.tally[AMBIGUOUS_ROUNDS],
    }
    build_report_path(out).write_text(json.dumps(summary, indent=1) + "\n")
    return report
