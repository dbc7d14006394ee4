"""Why a tabletop checkpoint misses: what its bad masks cover, which kinds of round it has not
learnt, whether its SAM image embedding carries object shape at all, and which words of the
query reach the mask decoder.

    python -m segllm_training.eval.shape_probe --checkpoint models/demo [--out FILE.json]

Four measurements, all on data the trainer never sees:

- ``misses``: held-out rounds 1-5 (:func:`segllm_training.eval.tabletop_eval.held_out`, the model's
  own outputs as references) with IoU < 0.5, by what else the mask covers (> 30% of an object):
  an object of the target's colour but another shape, the target's twin, an object of the
  target's shape but another colour, another object, or nothing else (the target itself is
  missed or cut).
- ``round_kinds``: IoU per round kind (describe, relation, other, again; split by whether the
  target has an identical twin) on the same conversations, teacher-forced as in training
  (ground-truth references), so each kind is scored on its own and not on earlier misses.
- ``shape_probe``: a linear classifier of the 4 shapes (and of the 5 colours, ``colour_*``)
  from the SAM embedding (image encoder output), trained on 70% of the objects of 400 new
  scenes and scored on the rest: at the object's centre cell, and averaged over its cells.
  Chance is 25% (20%).
- ``prompt_attributes``: the seg head's SAM prompt for "the {colour} {shape}", all 20 pairs on
  one held-out scene at a time: the share of the prompts' variance that the colour word
  explains, and the share the shape word explains. A model that ignores one word (it masks
  every triangle for "the green triangle") has a share of 0 for it. Shares are relative: the
  ``*_variance`` entries give each word's between-group variance itself, so a word that stays
  while the other grows can be told from one that fades.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segllm_ros.engine.engine import SegLLMEngine
from segllm_ros.model.losses import batch_iou
from segllm_ros.model.processing import sam_embedding
from segllm_ros.model.segllm import SegLLMModel
from segllm_ros.model.transforms import to_tensor
from segllm_training.eval.evaluate import run_conversation
from segllm_training.eval.tabletop_eval import held_out
from segllm_training.tabletop import COLORS, SHAPES, Scene, TabletopConfig, generate_scene
from segllm_training.tabletop.stream import to_sample
from segllm_training.trainer.batch import Sample, SampleRound, collate
from segllm_training.trainer.data import tabletop_item

PROBE_SEED = 5  # scenes for the probe: a stream of their own


def miss_kinds(model: SegLLMModel, n: int = 50, rounds: int = 5) -> dict:
    engine = SegLLMEngine(model)
    kinds: Counter[str] = Counter()
    total = 0
    for i, conv in enumerate(held_out(n)):
        objects = conv.scene.objects
        for outcome in run_conversation(
            engine, tabletop_item(conv, f"probe-{i}"), "predicted", f"probe-{i}", rounds
        ):
            total += 1
            if outcome.iou >= 0.5:
                continue
            target = objects[conv.rounds[outcome.round - 1].target]
            covered = [
                o
                for o in objects
                if o is not target and (outcome.prediction & o.mask).sum() > 0.3 * o.mask.sum()
            ]
            kinds[_miss_kind(target, covered)] += 1
    return {"rounds": total, "misses": sum(kinds.values()), "by_kind": dict(kinds.most_common())}


def _miss_kind(target, covered) -> str:
    if any(o.color == target.color and o.shape != target.shape for o in covered):
        return "same colour, other shape"
    if any(o.color == target.color for o in covered):
        return "twin"
    if any(o.shape == target.shape for o in covered):
        return "same shape, other colour"
    return "other object" if covered else "target missed or cut"


@torch.no_grad()
def round_kinds(model: SegLLMModel, n: int = 50, batch_size: int = 10) -> dict:
    """Teacher-forced IoU by round kind, ``"<kind>"`` or ``"<kind>, twin"``: mean IoU,
    rounds, and the share under 0.5."""
    model.eval()
    ious: dict[str, list[float]] = {}
    convs = held_out(n)
    for start in range(0, len(convs), batch_size):
        chunk = convs[start : start + batch_size]
        batch = collate([to_sample(c) for c in chunk], model)
        scores = batch_iou(model(batch).masks, batch.targets).tolist()
        rounds = [(c.scene, r) for c in chunk for r in c.rounds]
        for (scene, rnd), iou in zip(rounds, scores, strict=True):
            twin = ", twin" if scene.twin_of(rnd.target) is not None else ""
            ious.setdefault(rnd.kind + twin, []).append(iou)
    return {
        kind: {
            "mean_iou": float(np.mean(v)),
            "rounds": len(v),
            "under_0.5": float(np.mean(np.array(v) < 0.5)),
        }
        for kind, v in sorted(ious.items())
    }


@torch.no_grad()
def shape_features(model: SegLLMModel, scenes: list[Scene]) -> tuple[np.ndarray, ...]:
    """Per object: (centre-cell embedding, object-mean embedding, shape index, colour index)."""
    centre, mean, shape, colour = [], [], [], []
    for scene in scenes:
        emb = sam_embedding(model, [to_tensor(scene.image)])[0]
        grid = emb.shape[-1]
        for obj in scene.objects:
            cells = F.adaptive_avg_pool2d(torch.from_numpy(obj.mask).float()[None], grid)[0]
            ys, xs = np.nonzero(obj.mask)
            cy, cx = (
                int(ys.mean()) * grid // obj.mask.shape[0],
                int(xs.mean()) * grid // obj.mask.shape[1],
            )
            centre.append(emb[:, cy, cx].numpy())
            mean.append(((emb * cells).sum((1, 2)) / cells.sum()).numpy())
            shape.append(SHAPES.index(obj.shape))
            colour.append(list(COLORS).index(obj.color))
    return np.array(centre), np.array(mean), np.array(shape), np.array(colour)


def linear_probe_accuracy(x: np.ndarray, y: np.ndarray, train_frac: float = 0.7) -> float:
    """Held-out accuracy of a softmax classifier on standardised features."""
    torch.manual_seed(0)
    n = int(len(x) * train_frac)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    mu, sd = xt[:n].mean(0), xt[:n].std(0) + 1e-6
    xt = (xt - mu) / sd
    head = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(500):
        opt.zero_grad()
        F.cross_entropy(head(xt[:n]), yt[:n]).backward()
        opt.step()
    with torch.no_grad():
        return float((head(xt[n:]).argmax(1) == yt[n:]).float().mean())


def shape_probe(model: SegLLMModel, n_scenes: int = 400) -> dict:
    rng = np.random.default_rng(PROBE_SEED)
    scenes = [generate_scene(rng, TabletopConfig()) for _ in range(n_scenes)]
    centre, mean, shape, colour = shape_features(model, scenes)
    return {
        "objects": len(shape),
        "centre_cell": linear_probe_accuracy(centre, shape),
        "object_mean": linear_probe_accuracy(mean, shape),
        "colour_centre_cell": linear_probe_accuracy(centre, colour),
        "colour_object_mean": linear_probe_accuracy(mean, colour),
    }


@torch.no_grad()
def prompt_attributes(model: SegLLMModel, n_scenes: int = 5) -> dict:
    """Share of the target prompt's variance explained by the colour word and by the shape
    word (between-group sum of squares over total), averaged over ``n_scenes`` scenes."""
    model.eval()
    shares: dict[str, list[float]] = {
        "colour": [],
        "shape": [],
        "colour_variance": [],
        "shape_variance": [],
    }
    for conv in held_out(n_scenes):
        empty = np.zeros(conv.scene.image.shape[:2], dtype=bool)
        samples = [
            Sample(conv.scene.image, [SampleRound(f"the {c} {s}", [], empty)])
            for c in COLORS
            for s in SHAPES
        ]
        prompts = model(collate(samples, model)).prompts[:, 0].flatten(1)
        grid = (prompts - prompts.mean(0)).view(len(COLORS), len(SHAPES), -1)
        total = float(grid.pow(2).sum())
        shares["colour"].append(len(SHAPES) * float(grid.mean(1).pow(2).sum()) / total)
        shares["shape"].append(len(COLORS) * float(grid.mean(0).pow(2).sum()) / total)
        shares["colour_variance"].append(float(grid.mean(1).pow(2).sum(-1).mean()))
        shares["shape_variance"].append(float(grid.mean(0).pow(2).sum(-1).mean()))
    return {key: float(np.mean(v)) for key, v in shares.items()} | {"scenes": n_scenes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="models/demo")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--trajectory",
        type=Path,
        nargs="+",
        metavar="CHECKPOINT",
        help="only prompt_attributes, one JSON line per checkpoint (e.g. the "
        "steps/* a run exported with --set keep_exports=true)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.trajectory:
        for path in sorted(args.trajectory, key=lambda p: int(p.name) if p.name.isdigit() else 0):
            row = {"checkpoint": str(path), **prompt_attributes(SegLLMModel.from_pretrained(path))}
            print(json.dumps(row), flush=True)
        return
    model = SegLLMModel.from_pretrained(args.checkpoint)
    report = {
        "checkpoint": str(args.checkpoint),
        "misses": miss_kinds(model),
        "round_kinds": round_kinds(model),
        "shape_probe": shape_probe(model),
        "prompt_attributes": prompt_attributes(model),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
