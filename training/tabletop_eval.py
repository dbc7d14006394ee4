"""Per-round quality of a SegLLM checkpoint on held-out tabletop conversations.

Run through the real inference engine, so the numbers are what the node delivers. Two
history protocols: ``predicted`` (earlier rounds are the model's own outputs, as on a robot)
and ``ground_truth`` (earlier rounds are the true masks). ``blank_references`` zeroes the
reference input, which shows whether the model uses it at all.

    python -m segllm_training.tabletop_eval --checkpoint models/demo --n 50
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

import numpy as np

from segllm_ros.engine.engine import EngineConfig, SegLLMEngine
from segllm_ros.model.segllm import SegLLMModel
from segllm_training.data import tabletop_item
from segllm_training.evaluate import run_conversation
from segllm_training.tabletop import TabletopConfig, TabletopConversation, generate_dataset
from segllm_training.train_demo import EVAL_SEED


@dataclass
class EvalReport:
    iou_per_round: dict[int, list[float]] = field(default_factory=dict)
    twin_hits: int = 0
    twin_total: int = 0

    @property
    def twin_choice(self) -> float:
        return self.twin_hits / self.twin_total if self.twin_total else float("nan")

    def mean_iou(self, rounds: range | None = None) -> float:
        keys = [r for r in self.iou_per_round if rounds is None or r in rounds]
        values = [v for r in keys for v in self.iou_per_round[r]]
        return float(np.mean(values)) if values else float("nan")

    def summary(self) -> dict:
        return {"round_iou": {r: float(np.mean(v)) for r, v in sorted(self.iou_per_round.items())},
                "mean_iou_1_5": self.mean_iou(range(1, 6)), "twin_choice": self.twin_choice,
                "twin_rounds": self.twin_total}


def evaluate(engine: SegLLMEngine, conversations: list[TabletopConversation],
             history: str = "predicted") -> EvalReport:
    """Per-round IoU and twin choice: on rounds answerable only through the reference, the
    mask must overlap the right one of two identical objects more than its twin."""
    report = EvalReport()
    for n, conv in enumerate(conversations):
        cid = f"eval-{n}"
        for outcome in run_conversation(engine, tabletop_item(conv, cid), history, cid):
            report.iou_per_round.setdefault(outcome.round, []).append(outcome.iou)
            if outcome.twin_hit is not None:
                report.twin_total += 1
                report.twin_hits += int(outcome.twin_hit)
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
        out["blanked" if blank else "with_references"] = evaluate(engine, data,
                                                                  args.history).summary()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
