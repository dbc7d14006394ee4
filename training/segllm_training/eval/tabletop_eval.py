"""Per-round quality of a SegLLM checkpoint on held-out tabletop conversations.

Run through the real inference engine, so the numbers are what the node delivers. Two
history protocols: ``predicted`` (earlier rounds are the model's own outputs, as on a robot)
and ``ground_truth`` (earlier rounds are the true masks). ``blank_references`` zeroes the
reference input, which shows whether the model uses it at all.

    python -m segllm_training.eval.tabletop_eval --checkpoint models/demo --n 50
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine
from segllm_ros.model.segllm import SegLLMModel
from segllm_training.eval.answer_kinds import evaluate_answer_kinds, held_out_kinds
from segllm_training.eval.evaluate import RoundOutcome, RoundStats, run_conversation
from segllm_training.tabletop import TabletopConfig, TabletopConversation, generate_dataset
from segllm_training.tabletop.stream import EVAL_SEED
from segllm_training.trainer.data import tabletop_item


@dataclass
class EvalReport:
    """Per-round stats of one protocol (the MRSeg evaluation's :class:`RoundStats`)."""

    rounds: dict[int, RoundStats] = field(default_factory=dict)

    def add(self, outcome: RoundOutcome) -> None:
        self.rounds.setdefault(outcome.round, RoundStats()).add(outcome)

    def merged(self, rounds: range | None = None) -> RoundStats:
        total = RoundStats()
        for r, stats in self.rounds.items():
            if rounds is None or r in rounds:
                total.merge(stats)
        return total

    @property
    def twin_total(self) -> int:
        return self.merged().twin_total

    @property
    def twin_choice(self) -> float:
        return self.merged().twin_choice

    def mean_iou(self, rounds: range | None = None) -> float:
        return self.merged(rounds).giou

    def summary(self) -> dict:
        return {
            "round_iou": {r: s.giou for r, s in sorted(self.rounds.items())},
            "mean_iou_1_5": self.mean_iou(range(1, 6)),
            "twin_choice": self.twin_choice,
            "twin_rounds": self.twin_total,
        }


def evaluate(
    engine: SegLLMEngine, conversations: list[TabletopConversation], history: str = "predicted"
) -> EvalReport:
    """Per-round IoU and twin choice: on rounds answerable only through the reference, the
    mask must overlap the right one of two identical objects more than its twin."""
    report = EvalReport()
    for n, conv in enumerate(conversations):
        cid = f"eval-{n}"
        for outcome in run_conversation(engine, tabletop_item(conv, cid), history, cid):
            report.add(outcome)
    return report


def held_out(n: int, cfg: TabletopConfig | None = None) -> list[TabletopConversation]:
    return generate_dataset(EVAL_SEED, n, cfg or TabletopConfig())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="models/demo")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--history", choices=("predicted", "ground_truth"), default="predicted")
    args = parser.parse_args(argv)
    model = SegLLMModel.from_pretrained(args.checkpoint)
    data = held_out(args.n)
    out = {}
    for blank in (False, True):
        engine = SegLLMEngine(model, EngineConfig(blank_references=blank))
        out["blanked" if blank else "with_references"] = evaluate(
            engine, data, args.history
        ).summary()
    if model.config.max_segments > 1:
        kinds = evaluate_answer_kinds(SegLLMEngine(model), held_out_kinds(args.n))
        out["answer_kinds"] = kinds.summary()
        out["answer_kind_bars_missed"] = kinds.failed_bars()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
