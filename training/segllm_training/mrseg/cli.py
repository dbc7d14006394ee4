"""Command line: ``python -m segllm_training.mrseg {build,stats,describe,correct} ...``.

build     one source and split -> JSON Lines (tqdm, ``--workers`` processes, ``--skip-bad``)
stats     Table A1 (markdown) for built files, the share of ambiguous positional rounds, and
          the Fig. A1 rounds histogram
describe  GPT-4 attribute descriptions of COCO instances (input of ``attributes_coco``)
correct   GPT-4 two-pass grammar correction of a built file
Corrupt or missing input exits with status 2 and one line naming the file and record.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from .build import BuildError, build
from .config import BuildConfig
from .entries import BadRecords, SourceError
from .generators.ambiguity import AMBIGUOUS_ROUNDS, POSITIONAL_ROUNDS
from .readers.coco import read_coco_instances
from .sources import SOURCES, attributes_path
from .stats import ambiguity_line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m segllm_training.mrseg",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build one source/split")
    b.add_argument("--source", required=True, choices=sorted(SOURCES))
    b.add_argument("--root", required=True, type=Path, help="the source's annotation folder")
    b.add_argument("--split", required=True)
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--limit", type=int, default=None, help="first N images only")
    b.add_argument("--skip-bad", action="store_true", help="report bad records and continue")
    b.add_argument("--config", type=Path, help="JSON with BuildConfig fields to override")
    b.add_argument(
        "--sam-checkpoint", help="visual_genome: the official SAM state dict its masks come from"
    )
    b.add_argument(
        "--allow-random-sam",
        action="store_true",
        help="visual_genome without a checkpoint: random SAM weights (tests only)",
    )
    b.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("stats", help="Table A1 and the rounds histogram of built files")
    s.add_argument("files", nargs="+", type=Path)
    s.add_argument("--plot", type=Path, default=Path("mrseg_rounds.png"))
    d = sub.add_parser("describe", help="GPT-4 attribute descriptions of COCO instance crops")
    d.add_argument("--root", required=True, type=Path)
    d.add_argument("--split", required=True)
    d.add_argument("--limit", type=int, default=None)
    c = sub.add_parser("correct", help="GPT-4 grammar correction of a built file")
    c.add_argument("input", type=Path)
    c.add_argument("--out", required=True, type=Path)
    for g in (d, c):  # the GPT client's options
        g.add_argument("--model", default=None)
        g.add_argument("--base-url", default=None)
        g.add_argument("--cache-dir", type=Path, default=None)
        g.add_argument("--dry-run", action="store_true", help="count requests, send none")
    return p


def _gpt_client(args: argparse.Namespace):
    from .gpt import GptClient, GptConfig

    overrides = {
        k: v
        for k, v in (
            ("model", args.model),
            ("base_url", args.base_url),
            ("cache_dir", args.cache_dir),
        )
        if v is not None
    }
    return GptClient(GptConfig.from_env(dry_run=args.dry_run, **overrides))


def _gpt_summary(client) -> str:
    if client.cfg.dry_run:
        return f"dry run: {client.planned} requests to send, {client.cache_hits} cached"
    return f"{client.sent} requests sent, {client.retries} retries, {client.cache_hits} cached"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            cfg = BuildConfig(seed=args.seed)
            if args.config:
                cfg = replace(cfg, **json.loads(args.config.read_text()))
            if args.sam_checkpoint:
                cfg = replace(cfg, sam_checkpoint=args.sam_checkpoint)
            if args.allow_random_sam:
                cfg = replace(cfg, allow_random_sam=True)
            report = build(
                args.source,
                args.root,
                args.split,
                args.out,
                cfg,
                args.workers,
                args.limit,
                args.skip_bad,
                progress=not args.no_progress,
            )
            for message in report.skipped:
                print(f"skipped: {message}", file=sys.stderr)
            print(
                f"{args.out}: {report.conversations} conversations from {report.images} images"
                f" ({len(report.skipped)} skipped)"
            )
            tally = report.tally
            if tally[POSITIONAL_ROUNDS]:
                line = ambiguity_line(
                    tally[POSITIONAL_ROUNDS], tally[AMBIGUOUS_ROUNDS], cfg.ambiguous
                )
                print(f"{args.out}: {line}")
        elif args.command == "stats":
            from .stats import ambiguity_table, collect, histogram, table

            stats = collect(args.files)
            print(table(stats))
            ambiguity = ambiguity_table(stats)
            if ambiguity:
                print(ambiguity)
            print(f"histogram: {histogram(stats, args.plot)}")
        elif args.command == "describe":
            from .gpt import describe_instances

            client = _gpt_client(args)
            entries = read_coco_instances(args.root, args.split, BadRecords(False))
            descriptions = describe_instances(
                entries[: args.limit] if args.limit else entries, client
            )
            if not client.cfg.dry_run:
                out = attributes_path(args.root, args.split)
                out.write_text(json.dumps(descriptions, indent=0))
                print(f"{out}: {len(descriptions)} descriptions")
            print(_gpt_summary(client))
        else:
            from .gpt import correct_records
            from .schema import read_conversations, write_conversations

            client = _gpt_client(args)
            count = write_conversations(
                args.out, correct_records(read_conversations(args.input), client)
            )
            print(f"{args.out}: {count} conversations; {_gpt_summary(client)}")
    except (SourceError, BuildError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
