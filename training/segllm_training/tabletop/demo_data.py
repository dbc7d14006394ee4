"""Write the bundled demo frames and scripted conversations (``data/demo``).

Why scripted and not sampled: the demo has to show every reference form SegLLM handles (a
plain description, a relation to ``<the output of round k>``, "the other ...", ``<instance k>``,
"... again", "it") in a fixed, readable order, on the same frames every time. The scenes still
come from :func:`~segllm_training.tabletop.generate_scene` (fixed seeds), and every query is
re-checked with the generator's own rules (:func:`positional_relation`,
:func:`relation_singles_out`, :func:`vocabulary`), so the demo asks only questions the demo
model was trained on, and each has exactly one true answer.

Run: ``python -m segllm_training.tabletop.demo_data --out data/demo``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from segllm_ros.engine.answers import AMBIGUOUS, MANY, NONE
from segllm_ros.engine.clarify import resolve_clarification
from segllm_ros.engine.references import format_reference
from segllm_ros.interface.mask_codec import mask_to_rle
from segllm_training.relations import OVERLAP, SAME, positional_relation
from segllm_training.tabletop import (
    COLORS,
    SHAPES,
    Round,
    Scene,
    TabletopConfig,
    generate_scene,
    relation_singles_out,
    tokenize,
    vocabulary,
)
from segllm_training.tabletop import answer_kinds as AK

BASE_SEED = 2024
"""First seed tried; the search below is deterministic, so the output never changes."""
MAX_SEED_TRIES = 10_000
CONFIG = TabletopConfig()
KINDS_CONFIG = TabletopConfig(plural_weight=1.0, ambiguous_weight=1.0, absent_weight=1.0)
"""The vocabulary of the answer-kind rounds (scene 3), which the demo model learnt in its
stages 3 and 4."""


def _relation(scene: Scene, target: int, ref_target: int) -> str | None:
    """The relation phrase for "target ... ref_target" if it singles out the target, else None."""
    rel = positional_relation(scene.objects[target].box, scene.objects[ref_target].box)
    if rel in (SAME, OVERLAP) or not relation_singles_out(scene, target, rel, ref_target):
        return None
    return rel


def _twin_pair(scene: Scene) -> tuple[int, int] | None:
    for i in range(len(scene.objects)):
        j = scene.twin_of(i)
        if j is not None:
            return (i, j) if i < j else (j, i)
    return None


def script_conversation_1(scene: Scene) -> list[Round] | None:
    """Six rounds using every explicit reference form; None when the scene does not allow it.

    1 describe, 2 relation to ``<the output of round 1>`` (a twin), 3 "the other <twin>",
    4 relation to ``<instance 3>``, 5 ``<the output of round 2> again``, 6 relation (to a fifth
    object) to round 4 named by its caption.
    """
    pair = _twin_pair(scene)
    if pair is None or len(scene.objects) < 5:
        return None
    n = len(scene.objects)
    uniques = [i for i in range(n) if scene.name_is_unique(i)]
    name = [o.name for o in scene.objects]
    for u in uniques:
        for t in pair:
            rel2 = _relation(scene, t, u)
            if rel2 is None:
                continue
            other = scene.twin_of(t)
            assert other is not None
            for v in uniques:
                if v in (u, other):
                    continue
                rel4 = _relation(scene, v, other)
                if rel4 is None:
                    continue
                # Round 6: an object no earlier round was about, so all five kinds of thing
                # on the table get a mask.
                sixth = [
                    w for w in range(n) if w not in (u, t, other, v) and _relation(scene, w, v)
                ]
                if not sixth:
                    continue
                w = sixth[0]
                rel6 = _relation(scene, w, v)
                return [
                    Round(f"the {name[u]}", u, [], "describe", False, None),
                    Round(
                        f"the {name[t]} {rel2} <the output of round 1>",
                        t,
                        [1],
                        "relation",
                        False,
                        "output",
                    ),
                    Round(f"the other {name[other]}", other, [2], "other", True, "implicit"),
                    Round(
                        f"the {name[v]} {rel4} <instance 3>", v, [3], "relation", False, "instance"
                    ),
                    Round("<the output of round 2> again", t, [2], "again", True, "output"),
                    Round(
                        f"the {name[w]} {rel6} the {name[v]}", w, [4], "relation", False, "caption"
                    ),
                ]
    return None


def script_conversation_2(scene: Scene) -> list[Round] | None:
    """Three rounds after a reset: describe, relation to "it", relation to round 1."""
    n = len(scene.objects)
    if n < 3:
        return None
    name = [o.name for o in scene.objects]
    uniques = [i for i in range(n) if scene.name_is_unique(i)]
    for x in uniques:
        for y in range(n):
            if y == x or (rel2 := _relation(scene, y, x)) is None:
                continue
            for z in range(n):
                if z in (x, y) or (rel3 := _relation(scene, z, x)) is None:
                    continue
                return [
                    Round(f"the {name[x]}", x, [], "describe", False, None),
                    Round(f"the {name[y]} {rel2} it", y, [1], "relation", False, "it"),
                    Round(
                        f"the {name[z]} {rel3} <the output of round 1>",
                        z,
                        [1],
                        "relation",
                        False,
                        "output",
                    ),
                ]
    return None


def script_conversation_3(scene: Scene) -> list[Round] | None:
    """Issue 17's answer kinds: 1 a twin's bare name (AMBIGUOUS: both twins), 2 the reply
    picking the left one, 3 a plural query (MANY), 4 an object that is not there (NONE), 5 a
    relation to the object the reply chose. The twins stand side by side: the demo model's
    slots follow reading order (left to right) and it tells twins stacked one above the other
    apart less well (README, "Asking instead of guessing")."""
    pair = _twin_pair(scene)
    if pair is None:
        return None
    candidates = AK.in_reading_order(scene, list(pair))
    if AK.side_words(scene, candidates)[0] != "left":
        return None
    plural = [p for p in AK.plural_options(scene) if sorted(p[1]) != sorted(pair)]
    absent = [
        q for q, is_plural in AK.absent_options(scene, SHAPES, tuple(COLORS)) if not is_plural
    ]
    if not plural or not absent:
        return None
    side = AK.side_words(scene, candidates)[0]
    chosen = candidates[0]
    for w in range(len(scene.objects)):
        if w in pair or (rel := _relation(scene, w, chosen)) is None:
            continue
        phrases, members = max(plural, key=lambda p: len(p[1]))
        name = scene.objects[chosen].name
        return [
            Round(f"the {name}", -1, [], "ambiguous", targets=candidates, answer=AMBIGUOUS),
            Round(f"the {side} one", chosen, [], "clarify"),
            Round(phrases[1], -1, [], "plural", targets=members, answer=MANY, plural=True),
            Round(absent[0], -1, [], "absent", answer=NONE),
            Round(
                f"the {scene.objects[w].name} {rel} <the output of round 2>",
                w,
                [2],
                "relation",
                False,
                "output",
            ),
        ]
    return None


def verify_round(scene: Scene, rounds: list[Round], r: int) -> None:
    """Re-derive round ``r`` (1-based) from the generator's rules; raise if it is not sound.

    Why separately from the scripting: it checks the rendered *text* against the geometry, so a
    slip in the wording (wrong relation, wrong round number) cannot reach the demo.
    """
    rnd = rounds[r - 1]
    words = set(vocabulary(KINDS_CONFIG))
    if rnd.kind in ("ambiguous", "clarify", "plural", "absent"):
        unknown = [tok for tok in tokenize(rnd.query) if tok not in words]
        assert not unknown, f"round {r}: {unknown} not in the vocabulary"
        _verify_answer_kind(scene, rounds, r)
        return
    words = set(vocabulary(CONFIG))
    unknown = [tok for tok in tokenize(rnd.query) if tok not in words]
    assert not unknown, f"round {r}: {unknown} not in the vocabulary"
    assert all(1 <= k < r for k in rnd.ref_rounds), f"round {r}: bad ref_rounds {rnd.ref_rounds}"
    assert 0 <= rnd.target < len(scene.objects)
    obj = scene.objects[rnd.target]
    twin = scene.twin_of(rnd.target)
    refs = {
        "output": [format_reference(k, "output") for k in rnd.ref_rounds],
        "instance": [format_reference(k, "instance") for k in rnd.ref_rounds],
        "it": ["it"],
        "that": ["that"],
        "caption": [f"the {scene.objects[rounds[k - 1].target].name}" for k in rnd.ref_rounds],
    }
    if rnd.ref_form in ("it", "that", "implicit"):
        assert rnd.ref_rounds == [r - 1], f"round {r}: '{rnd.ref_form}' means the previous round"
    if rnd.ref_form == "caption":
        k_target = rounds[rnd.ref_rounds[0] - 1].target
        assert scene.name_is_unique(k_target), f"round {r}: caption ref to a twin is ambiguous"
    if rnd.kind == "describe":
        assert not rnd.ref_rounds and twin is None and rnd.query == f"the {obj.name}"
    elif rnd.kind == "relation":
        (k,) = rnd.ref_rounds
        ref_target = rounds[k - 1].target
        rel = positional_relation(obj.box, scene.objects[ref_target].box)
        assert rnd.query in [f"the {obj.name} {rel} {ref}" for ref in refs[rnd.ref_form]], (
            f"round {r}: {rnd.query!r} does not state the relation {rel!r}"
        )
        assert relation_singles_out(scene, rnd.target, rel, ref_target), (
            f"round {r}: {rnd.query!r} is ambiguous"
        )
    elif rnd.kind == "other":
        (k,) = rnd.ref_rounds
        assert scene.twin_of(rounds[k - 1].target) == rnd.target
        assert rnd.query == f"the other {obj.name}"
    elif rnd.kind == "again":
        (k,) = rnd.ref_rounds
        assert rounds[k - 1].target == rnd.target
        assert rnd.query in [f"{ref} again" for ref in refs[rnd.ref_form]]
        assert rnd.ambiguous_without_reference == (twin is not None)
    else:
        raise AssertionError(f"round {r}: unknown kind {rnd.kind!r}")


def _verify_answer_kind(scene: Scene, rounds: list[Round], r: int) -> None:
    """Round ``r``'s targets are exactly what its words select."""
    rnd = rounds[r - 1]
    objects = scene.objects
    if rnd.kind == "ambiguous":
        name = rnd.query.removeprefix("the ")
        matches = [i for i, o in enumerate(objects) if o.name == name]
        assert len(matches) > 1 and rnd.targets == AK.in_reading_order(scene, matches)
    elif rnd.kind == "clarify":
        asked = rounds[r - 2]
        assert asked.kind == "ambiguous" and rnd.target in asked.targets
        side = AK.side_words(scene, asked.targets)[asked.targets.index(rnd.target)]
        assert rnd.query == f"the {side} one"
        boxes = [objects[i].box for i in asked.targets]
        assert asked.targets[resolve_clarification(rnd.query, boxes)] == rnd.target, (
            f"round {r}: the engine reads {rnd.query!r} as another candidate"
        )
    elif rnd.kind == "plural":
        options = {q: m for phrases, m in AK.plural_options(scene) for q in phrases}
        assert options.get(rnd.query) == rnd.targets, f"round {r}: {rnd.query!r}"
    else:
        absent = dict(AK.absent_options(scene, SHAPES, tuple(COLORS)))
        assert rnd.query in absent and not rnd.targets, f"round {r}: {rnd.query!r} is there"


def find_scene(start: int, script) -> tuple[int, Scene, list[Round]]:
    """First seed from ``start`` whose scene the ``script`` function can build a conversation on."""
    for seed in range(start, start + MAX_SEED_TRIES):
        scene = generate_scene(np.random.default_rng(seed), CONFIG)
        rounds = script(scene)
        if rounds is not None:
            return seed, scene, rounds
    raise RuntimeError(f"no suitable scene in seeds {start}..{start + MAX_SEED_TRIES}")


def _scene_record(
    name: str, seed: int, scene: Scene, cid: str, rounds: list[Round], reset_before: bool
) -> dict:
    return {
        "name": name,
        "image": f"{name}.png",
        "seed": seed,
        "size": list(scene.image.shape[:2]),
        "objects": [
            {
                "index": i,
                "name": o.name,
                "shape": o.shape,
                "color": o.color,
                "box": list(o.box),
                "mask": mask_to_rle(o.mask),
            }
            for i, o in enumerate(scene.objects)
        ],
        "conversation": {
            "id": cid,
            "reset_before": reset_before,
            "rounds": [
                {
                    "round": r,
                    "query": rnd.query,
                    "kind": rnd.kind,
                    "ref_form": rnd.ref_form,
                    "ref_rounds": rnd.ref_rounds,
                    "target": rnd.target,
                    "target_name": scene.objects[rnd.target].name if rnd.target >= 0 else "",
                    "answer": rnd.answer,
                    "targets": rnd.targets,
                    "ambiguous_without_reference": rnd.ambiguous_without_reference,
                }
                for r, rnd in enumerate(rounds, start=1)
            ],
        },
    }


def make_demo_data(out: Path) -> dict:
    """Search the two scenes, verify both conversations, write PNGs and ``demo.json``."""
    out.mkdir(parents=True, exist_ok=True)
    seed1, scene1, conv1 = find_scene(BASE_SEED, script_conversation_1)
    seed2, scene2, conv2 = find_scene(seed1 + 1, script_conversation_2)
    seed3, scene3, conv3 = find_scene(seed2 + 1, script_conversation_3)
    records = []
    for index, (seed, scene, rounds) in enumerate(
        [(seed1, scene1, conv1), (seed2, scene2, conv2), (seed3, scene3, conv3)], start=1
    ):
        for r in range(1, len(rounds) + 1):
            verify_round(scene, rounds, r)
        name = f"scene_{index}"
        bgr = cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(out / f"{name}.png"), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"could not write {out / name}.png")
        records.append(_scene_record(name, seed, scene, f"demo-{index}", rounds, index > 1))
    data = {
        "description": "SegLLM ROS demo: three tabletop frames and scripted multi-round "
        "conversations (written by segllm_training.tabletop.demo_data)",
        "generator": {"module": "segllm_training.tabletop", "config": asdict(CONFIG)},
        "scenes": records,
    }
    (out / "demo.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    args = parser.parse_args(argv)
    data = make_demo_data(args.out)
    for scene in data["scenes"]:
        objs = ", ".join(f"{o['index']}={o['name']}" for o in scene["objects"])
        print(f"{scene['name']} (seed {scene['seed']}): {objs}")
        for rnd in scene["conversation"]["rounds"]:
            print(f"  {rnd['round']}. {rnd['query']!r} -> {rnd['target']} refs={rnd['ref_rounds']}")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({total / 1024:.1f} kB)")


if __name__ == "__main__":
    main()
