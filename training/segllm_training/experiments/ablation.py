r"""The mask-encoding ablation on tabletop scenes with identical twins (cf. SegLLM Table A4).

    python -m segllm_training.experiments.ablation --quick          # minutes on a CPU
    python -m segllm_training.experiments.ablation --config config/train/tabletop_demo.yaml \
        --steps 4000

Same data stream, steps, batch and optimiser for every variant (equal budget):

- ``a_segllm``: the project's SegLLM (reference tokens + dense reference prompt to SAM);
- ``a_upstream``: upstream SegLLM (reference tokens only);
- ``b_lisa1`` / ``b_lisa2``: the same model with no reference input at all (no dense prompt,
  reference tokens always zero, no reference loss), trained and evaluated on the LISA
  Approach 1 ("the mask") and Approach 2 (the referenced object's caption) conversions.

Every scene holds a pair of identical twins; "the other red circle" or "<instance 2> again"
can only be answered by knowing which twin an earlier round produced. Reported per round
(cIoU over all rounds, and over the rounds that need the reference) with earlier rounds from
ground truth and from the model's own outputs, plus twin choice.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine
from segllm_training.eval.evaluate import (
    HISTORIES,
    Report,
    report_rows,
    run_conversation,
    table,
    write_reports,
)
from segllm_training.mrseg import lisa
from segllm_training.tabletop import TabletopConfig, generate_dataset
from segllm_training.tabletop.stream import EVAL_SEED  # held out from every training stream
from segllm_training.trainer.config import TrainConfig
from segllm_training.trainer.data import Item, tabletop_item
from segllm_training.trainer.loop import train

QUICK_CONFIG = Path("config") / "train" / "tabletop_tiny.yaml"  # in the repository root
RIGHT_IOU = 0.6  # an earlier answer counts as right above this (both twins: 0.5)
NO_REFERENCE = {
    "dense_reference_prompt": False,
    "reference_token_dropout": 1.0,
    "mask_aware_decoding": False,
}


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    overrides: dict
    lisa: str | None = None


VARIANTS = (
    Variant(
        "a_segllm", "(a) SegLLM: ref tokens + dense ref prompt", {"dense_reference_prompt": True}
    ),
    Variant("a_upstream", "(a') upstream: ref tokens only", {"dense_reference_prompt": False}),
    Variant("b_lisa1", "(b) no ref input, LISA Approach 1", NO_REFERENCE, "approach1"),
    Variant("b_lisa2", "(b) no ref input, LISA Approach 2", NO_REFERENCE, "approach2"),
)


def variant_config(base: TrainConfig, variant: Variant) -> TrainConfig:
    cfg = copy.deepcopy(base)
    cfg.model.overrides = {**cfg.model.overrides, **variant.overrides}
    for source in cfg.data.sources:
        source.lisa = variant.lisa
    return cfg


def held_out_items(cfg: TabletopConfig, n: int) -> list[Item]:
    return [
        tabletop_item(conv, f"eval-{i}", "val")
        for i, conv in enumerate(generate_dataset(EVAL_SEED, n, cfg))
    ]


@dataclass
class VariantEval:
    everything: Report  # every round
    ambiguous: Report  # rounds that need the reference (a twin is the distractor)
    # ambiguous rounds >= 2 whose referenced rounds were answered right (IoU > 0.6: a mask
    # over both identical twins has IoU 0.5 with either): tells a reference mechanism that
    # fails from one that is fed wrong earlier outputs
    given_right_reference: Report


def evaluate_variant(
    model, variant: Variant, items: list[Item], max_rounds: int
) -> dict[str, VariantEval]:
    """Per history protocol, through the engine; the LISA variants get the converted text
    and no reference input."""
    engine = SegLLMEngine(model, EngineConfig(blank_references=variant.lisa is not None))
    shown = [
        Item(lisa.convert(item.record, variant.lisa), item.image, item.distractors)
        for item in items
    ]
    out = {}
    for history in HISTORIES:
        result = VariantEval(Report(), Report(), Report())
        for n, item in enumerate(items):
            outcomes = run_conversation(engine, shown[n], history, f"abl-{n}", max_rounds)
            for outcome in outcomes:
                result.everything.add("tabletop", "val", outcome)
                if outcome.distractor is None:
                    continue
                result.ambiguous.add("tabletop", "val", outcome)
                refs = item.record.rounds[outcome.round - 1].ref_rounds
                if refs and all(outcomes[k - 1].iou > RIGHT_IOU for k in refs):
                    result.given_right_reference.add("tabletop", "val", outcome)
        out[history] = result
    return out


def run(
    base: TrainConfig,
    out: Path,
    n_eval: int,
    max_rounds: int = 6,
    variants: tuple[Variant, ...] = VARIANTS,
    progress: bool = True,
) -> dict:
    """Train and evaluate every variant; writes tables, plot and ``summary.json`` to ``out``."""
    tabletop = TabletopConfig(**base.data.sources[0].tabletop)
    results: dict = {}
    all_reports: dict[str, Report] = {}
    ambiguous_reports: dict[str, Report] = {}
    items = held_out_items(tabletop, n_eval)  # the same conversations for every variant
    for variant in variants:
        # equal budget from scratch: a finished run left in ``out`` would otherwise be resumed
        # at its last step, i.e. evaluated without training
        shutil.rmtree(out / variant.name, ignore_errors=True)
        t0 = time.monotonic()
        model = train(variant_config(base, variant), out / variant.name, progress=progress)
        train_s = time.monotonic() - t0
        reports = evaluate_variant(model, variant, items, max_rounds)
        entry = {"label": variant.label, "train_s": round(train_s, 1)}
        for history, result in reports.items():
            short = "GT" if history == "ground_truth" else "pred"
            all_reports[f"{variant.name} {short}"] = result.everything
            ambiguous_reports[f"{variant.name} {short}"] = result.ambiguous
            later = result.ambiguous.overall(from_round=2)
            right = result.given_right_reference.overall(from_round=2)
            entry[history] = {
                "ciou_per_round": {r: s.ciou for r, s in result.everything.rounds().items()},
                "ambiguous_ciou_r2plus": later.ciou,
                "twin_choice_r2plus": later.twin_choice,
                "ambiguous_rounds": later.twin_total,
                "twin_choice_given_right_reference": right.twin_choice,
                "rounds_given_right_reference": right.twin_total,
            }
        results[variant.name] = entry
    write_reports(all_reports, out / "all_rounds", "tabletop twins: every round", max_rounds)
    write_reports(
        ambiguous_reports,
        out / "ambiguous_rounds",
        "tabletop twins: rounds that need the reference",
        max_rounds,
    )
    markdown = render(results, all_reports, ambiguous_reports, max_rounds)
    (out / "table.md").write_text(markdown + "\n")
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    return results


def render(
    results: dict, all_reports: dict[str, Report], ambiguous: dict[str, Report], max_rounds: int
) -> str:
    lines = [
        "cIoU (%) per round, every round of twin scenes",
        "",
        table(report_rows(all_reports), "ciou", max_rounds),
        "",
        "cIoU (%) per round, only rounds that need the reference",
        "",
        table(report_rows(ambiguous), "ciou", max_rounds),
        "",
        "Twin choice (%) on rounds >= 2 that need the reference; last column: predicted "
        f"history, only where the referenced rounds were answered right (IoU > {RIGHT_IOU})",
        "",
        "| variant | GT history | predicted history | pred., reference right | rounds |",
        "|---|---|---|---|---|",
    ]
    for entry in results.values():
        gt, pred = entry["ground_truth"], entry["predicted"]
        lines.append(
            f"| {entry['label']} | {100 * gt['twin_choice_r2plus']:.1f} | "
            f"{100 * pred['twin_choice_r2plus']:.1f} | "
            f"{_percent(pred['twin_choice_given_right_reference'])} "
            f"(n={pred['rounds_given_right_reference']}) | "
            f"{gt['ambiguous_rounds']} |"
        )
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}"


def quick_config(steps: int) -> TrainConfig:
    source_tree = Path(__file__).resolve().parents[3] / QUICK_CONFIG
    cfg = TrainConfig.load(QUICK_CONFIG if QUICK_CONFIG.is_file() else source_tree)
    cfg.max_steps = steps
    cfg.checkpoint_every = steps
    return cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, minutes on a CPU")
    parser.add_argument("--config", type=Path, help="experiment YAML with a tabletop source")
    parser.add_argument("--steps", type=int, help="training steps per variant")
    parser.add_argument("--n-eval", type=int, default=None, help="held-out conversations")
    parser.add_argument("--only", nargs="+", choices=[v.name for v in VARIANTS])
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.quick or args.config is None:
        cfg = quick_config(args.steps or 300)
    else:
        cfg = TrainConfig.load(args.config)
        cfg.max_steps = args.steps or cfg.max_steps
    variants = tuple(v for v in VARIANTS if not args.only or v.name in args.only)
    n_eval = args.n_eval or (60 if args.quick else 200)
    run(cfg, args.out, n_eval, variants=variants)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
