"""Synthetic "tabletop" scenes with multi-round referring conversations.

Why this exists: SegLLM's point is that a round may refer to an *earlier round's output*
("the red circle to the left of <the output of round 1>", "the other blue square"). Real data
for that (MRSeg) is large; to train and smoke-test a tiny model on CPU we need a generator whose
scenes are trivially segmentable but whose conversations still *require* the reference
mechanism. Identical twin objects are the key ingredient: "the other red circle" can only be
resolved by knowing which red circle the referenced round produced.

Everything is deterministic given a :class:`numpy.random.Generator` (or a seed for
:func:`generate_dataset`).

Scenes
    A square RGB ``uint8`` image: a light, slightly varying table colour with mild noise, and
    ``min_objects..max_objects`` flat-coloured shapes (:data:`SHAPES` x :data:`COLORS`) of
    ``min_size..max_size`` px, drawn with OpenCV and placed without overlap (boxes at least
    :data:`GAP` px apart). With probability ``twin_prob`` exactly one pair of *identical* objects
    (same shape, colour, size, hence the same pixels) is present; every other object has a
    (shape, colour) combination of its own, so names are unique except for the twin pair.
    With probability ``same_shape_prob`` a scene's objects all have one shape (up to the five
    colours; a sixth distinct object, if any, has another shape), so only colour tells them apart;
    with ``same_colour_prob`` they all have one colour (up to the four shapes), so only shape does.

Round kinds (:data:`KINDS`)
    ``describe``  "the {name}"; for a twin "the {name} on the left/right/top/bottom" (the axis
                  on which the twins' centres differ most). No references.
    ``relation``  "the {name} {relation} {REF}", relation from
                  :func:`~segllm_training.relations.positional_relation` (target box vs. the
                  referenced round's target box); the triple must single out the target.
    ``other``     "the other {name}" (reference to the previous round) or
                  "the {name} that is not {REF}": the twin of the referenced round's target.
    ``again``     "{REF} again": the referenced round's target once more.

REF forms (:data:`REF_FORMS`), how an earlier round ``k`` is named
    ``caption``   "the {name}" of round k's target (only when that name is unique in the scene),
                  sampled with probability ``caption_ref_prob``; otherwise one of
    ``output``    "<the output of round {k}>"
    ``instance``  "<instance {k}>"
    ``it``/``that``  only when k is the previous round.
    The "the other {name}" phrasing names no round explicitly; its ``ref_form`` is
    ``"implicit"``. ``Round.ref_rounds`` always lists k, whatever the text form.

``ambiguous_without_reference`` is True only for rounds that can be answered solely through the
referenced output: every ``other`` round, and ``again`` rounds whose target has a twin.
Directional ``relation`` rounds are not counted (the relation words carry information too).

Tokenisation assumed by :func:`vocabulary`: ``re.findall(r"\\w+|[^\\w\\s]", query)``, i.e. runs
of word characters, and every other non-space character on its own; "<the output of round 3>"
gives "<", "the", "output", "of", "round", "3", ">".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import cv2
import numpy as np

from segllm_ros.engine.answers import AMBIGUOUS, ONE
from segllm_ros.engine.references import REFERENCE_FORMS, format_reference
from segllm_training.relations import OVERLAP, RELATIONS, SAME, positional_relation
from segllm_training.tabletop import answer_kinds as AK

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""Shapes with distinct silhouettes even at 18 px: round, cornered, pointed, concave."""

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 195, 20),
    "purple": (140, 55, 175),
}
"""Colour name -> RGB: saturated, far apart in hue, all clearly off the light table colour."""

KINDS: tuple[str, ...] = ("describe", "relation", "other", "again")
REF_FORMS: tuple[str, ...] = ("caption", "output", "instance", "it", "that")
IMPLICIT_REF = "implicit"
LOCATION_WORDS: tuple[str, ...] = ("left", "right", "top", "bottom")

GAP = 2
"""Minimum gap in px between the boxes of any two objects (so no contact, no overlap)."""
MARGIN = 2
"""Minimum distance in px between an object box and the image border."""

TOKEN_RE = re.compile(r"\w+|[^\w\s]")

# Per-round kind weights (among the kinds that have a valid candidate this round). Relation
# and the reference-only kinds are favoured: describe rounds need no memory at all.
_KIND_WEIGHTS: dict[str, float] = {"describe": 1.0, "relation": 2.0, "other": 2.0, "again": 1.0}
# "other"/"again" weights are multiplied by this per earlier round of the same kind, so a
# conversation does not ping-pong between the twins for all of its rounds.
_REPEAT_DECAY = 0.4
_LAYOUT_TRIES = 100
_POSITION_TRIES = 200


@dataclass(frozen=True)
class TabletopConfig:
    """Generator knobs; defaults give 128 px scenes a tiny CPU model can learn from."""

    image_size: int = 128
    min_objects: int = 3
    max_objects: int = 6
    min_size: int = 18
    max_size: int = 36
    twin_prob: float = 0.8
    max_rounds: int = 6
    min_rounds: int = 3
    caption_ref_prob: float = 0.5
    twin_describe_weight: float = 3.0
    """Describe rounds pick a twin this many times more often than a unique object, so twins
    get into the conversation early and "other"/"again" rounds become possible; raising it
    (with ``twin_prob``) gives more "the {name} on the left" rounds to learn from."""

    same_shape_prob: float = 0.0
    """Share of scenes whose objects all have one shape, so the colour word alone names them.
    Why: a model learns the shape word first and can settle in a colour-blind minimum (masking
    every circle for "the red circle") although half the default targets need the colour; these
    scenes make the colour word pay at once. 0 draws nothing extra, so default datasets stay as
    they were."""

    same_colour_prob: float = 0.0
    """Share of scenes whose objects all have one colour, so the shape word alone names them.
    Why: the mirror image of ``same_shape_prob``; a prompt trained on same-shape scenes alone
    leans on colour and misses "the red square" for the red circle. 0 draws nothing extra."""

    plural_weight: float = 0.0
    """Weight of plural rounds ("all the red objects", "the crosses", "both red circles"):
    every match is the answer (MANY). Like the other new-kind weights, 0 draws nothing extra,
    so default datasets stay as they were."""

    ambiguous_weight: float = 0.0
    """Weight of "the {name}" for a twin (AMBIGUOUS: both are candidates); the next round is
    always the operator's reply that picks one ("the left one", "<candidate 2>")."""

    absent_weight: float = 0.0
    """Weight of rounds naming what is not on the table (NONE)."""

    @property
    def answer_kinds(self) -> bool:
        """Whether conversations have rounds of the other answer kinds (MANY/AMBIGUOUS/NONE)."""
        return bool(self.plural_weight or self.ambiguous_weight or self.absent_weight)

    def __post_init__(self) -> None:
        """Fail early on settings the generator cannot honour."""
        if not 2 <= self.min_objects <= self.max_objects:
            raise ValueError("need 2 <= min_objects <= max_objects")
        if self.max_objects - 1 > len(SHAPES) * len(COLORS):
            raise ValueError("max_objects exceeds the number of distinct (shape, colour) pairs")
        if not 4 <= self.min_size <= self.max_size:
            raise ValueError("need 4 <= min_size <= max_size")
        if self.max_size + 2 * MARGIN > self.image_size:
            raise ValueError("max_size does not fit in the image")
        if not 1 <= self.min_rounds <= self.max_rounds:
            raise ValueError("need 1 <= min_rounds <= max_rounds")
        if not all(
            0.0 <= p <= 1.0
            for p in (
                self.twin_prob,
                self.caption_ref_prob,
                self.same_shape_prob,
                self.same_colour_prob,
            )
        ):
            raise ValueError("probabilities must lie in [0, 1]")
        if self.same_shape_prob + self.same_colour_prob > 1.0:
            raise ValueError("same_shape_prob + same_colour_prob must not exceed 1")
        if self.twin_describe_weight <= 0:
            raise ValueError("twin_describe_weight must be positive")
        if min(self.plural_weight, self.ambiguous_weight, self.absent_weight) < 0:
            raise ValueError("answer-kind weights must not be negative")


@dataclass(eq=False)
class TabletopObject:
    """One shape on the table; ``box`` is ``(x0, y0, x1, y1)``, exclusive, tight on ``mask``."""

    shape: str
    color: str
    size: int
    mask: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        """The caption used in queries, e.g. "red circle"."""
        return f"{self.color} {self.shape}"

    @property
    def center(self) -> tuple[float, float]:
        """Box centre ``(x, y)``; used to name a twin's side ("on the left")."""
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0


@dataclass(eq=False)
class Scene:
    """An image and its objects (indices into ``objects`` are the round targets)."""

    image: np.ndarray
    objects: list[TabletopObject]

    def target_mask(self, i: int) -> np.ndarray:
        """Ground-truth boolean ``HxW`` mask of object ``i``."""
        return self.objects[i].mask

    def twin_of(self, i: int) -> int | None:
        """Index of the object identical to ``i``, or None; twins share the (only) non-unique
        name."""
        for j, obj in enumerate(self.objects):
            if j != i and obj.name == self.objects[i].name:
                return j
        return None

    def name_is_unique(self, i: int) -> bool:
        """Whether "the {name}" of object ``i`` denotes exactly one object."""
        return self.twin_of(i) is None


@dataclass
class Round:
    """One operator request: ``target`` indexes ``Scene.objects`` (-1 when the answer is not
    one object: then ``targets`` lists them, in reading order); ``ref_rounds`` are 1-based."""

    query: str
    target: int
    ref_rounds: list[int] = field(default_factory=list)
    kind: str = "describe"
    ambiguous_without_reference: bool = False
    ref_form: str | None = None
    """How the referenced round is named in ``query`` (a :data:`REF_FORMS` entry, or
    ``"implicit"`` for "the other {name}"); None when the round references nothing."""
    targets: list[int] = field(default_factory=list)
    answer: str = ONE  # the answer kind (segllm_ros.engine.answers)
    plural: bool = False

    def __post_init__(self) -> None:
        if self.target >= 0 and not self.targets:
            self.targets = [self.target]


@dataclass(eq=False)
class TabletopConversation:
    """A scene plus its rounds, in order (round ``r`` is ``rounds[r - 1]``)."""

    scene: Scene
    rounds: list[Round]

    def format(self) -> str:
        """Human-readable transcript, for reports and debugging."""
        lines = [
            "objects: "
            + ", ".join(f"{i}={o.name}@{o.box}" for i, o in enumerate(self.scene.objects))
        ]
        for r, rnd in enumerate(self.rounds, start=1):
            flag = " [needs ref]" if rnd.ambiguous_without_reference else ""
            lines.append(
                f"  {r}. {rnd.query!r} -> {rnd.target} ({rnd.kind}, refs={rnd.ref_rounds},"
                f" form={rnd.ref_form}){flag}"
            )
        return "\n".join(lines)


def tokenize(text: str) -> list[str]:
    """Split a query into vocabulary tokens (``\\w+`` runs and single punctuation marks)."""
    return TOKEN_RE.findall(text)


def vocabulary(cfg: TabletopConfig | None = None) -> list[str]:
    """Every token the generator can emit, sorted; a closed vocabulary for a tiny text encoder.

    Why a superset of what appears in practice: it includes all :data:`RELATIONS` phrases
    (also "the same as"/"overlapping with", which tabletop scenes never produce) and every
    round number ``1..max_rounds``, so the vocabulary depends only on the config.
    """
    cfg = cfg or TabletopConfig()
    texts = [
        *SHAPES,
        *COLORS,
        *RELATIONS,
        *(f"the x on the {w}" for w in LOCATION_WORDS),
        "the other x",
        "the x that is not y",
        "x again",
        "it that",
        *(
            format_reference(k, form)
            for k in range(1, cfg.max_rounds + 1)
            for form in REFERENCE_FORMS
        ),
        *(AK.WORDS if cfg.answer_kinds else ()),
    ]
    words = {tok for text in texts for tok in tokenize(text)} - {"x", "y"}
    return sorted(words)


@cache
def _shape_template(shape: str, size: int) -> np.ndarray:
    """Boolean ``size x size`` silhouette; cached and read-only, so twins share exact pixels."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    s = size - 1
    if shape == "circle":
        c = round(s / 2 * 16)
        cv2.circle(canvas, (c, c), c, 1, thickness=-1, lineType=cv2.LINE_8, shift=4)
    elif shape == "square":
        cv2.rectangle(canvas, (0, 0), (s, s), 1, thickness=-1)
    elif shape == "triangle":
        pts = np.round(np.array([[s / 2, 0], [0, s], [s, s]]) * 16).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=4)
    elif shape == "cross":
        bar = max(3, round(size / 3))
        lo = (size - bar) // 2
        hi = lo + bar - 1
        cv2.rectangle(canvas, (lo, 0), (hi, s), 1, thickness=-1)
        cv2.rectangle(canvas, (0, lo), (s, hi), 1, thickness=-1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask = canvas.astype(bool)
    mask.flags.writeable = False
    return mask


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight exclusive box of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _shared_attribute(rng: np.random.Generator, cfg: TabletopConfig) -> int | None:
    """Which combo field (0 shape, 1 colour) all of a scene's objects share; None for most
    scenes. Draws one number only when a shared-attribute probability is set."""
    if not (cfg.same_shape_prob or cfg.same_colour_prob):
        return None
    u = rng.random()
    if u < cfg.same_shape_prob:
        return 0
    if u < cfg.same_shape_prob + cfg.same_colour_prob:
        return 1
    return None


def _sample_specs(rng: np.random.Generator, cfg: TabletopConfig) -> list[tuple[str, str, int]]:
    """(shape, colour, size) per object: one identical pair with ``twin_prob``, rest unique."""
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    combos = [(shape, color) for shape in SHAPES for color in COLORS]
    order = rng.permutation(len(combos))
    shared = _shared_attribute(rng, cfg)
    if shared is not None:
        # Combos sharing the first combo's shape (or colour) go first, in the permutation's
        # order (stable sort).
        value = combos[int(order[0])][shared]
        order = sorted(order, key=lambda i: combos[i][shared] != value)
    has_twin = bool(rng.random() < cfg.twin_prob)
    n_combos = n - 1 if has_twin else n
    specs = []
    for idx in order[:n_combos]:
        shape, color = combos[int(idx)]
        specs.append((shape, color, int(rng.integers(cfg.min_size, cfg.max_size + 1))))
    if has_twin:
        specs.append(specs[0])
    return [specs[int(i)] for i in rng.permutation(len(specs))]


def _place(
    rng: np.random.Generator, sizes: list[int], image_size: int
) -> list[tuple[int, int]] | None:
    """Rejection-sample top-left corners so that boxes keep ``GAP`` px apart; None on failure.

    Why boxes and not masks: box separation makes every pair's positional relation one of the
    eight directional phrases, which is what the relation rounds are built from.
    """
    placed: list[tuple[int, int, int, int]] = []
    corners: list[tuple[int, int]] = []
    for size in sizes:
        hi = image_size - MARGIN - size
        for _ in range(_POSITION_TRIES):
            x, y = (int(v) for v in rng.integers(MARGIN, hi + 1, size=2))
            if all(
                x >= bx1 + GAP or x + size + GAP <= bx0 or y >= by1 + GAP or y + size + GAP <= by0
                for bx0, by0, bx1, by1 in placed
            ):
                placed.append((x, y, x + size, y + size))
                corners.append((x, y))
                break
        else:
            return None
    return corners


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Light table colour (varies per scene) with a faint gradient and mild pixel noise."""
    # Warm near-neutral: one lightness plus a small per-channel tint, so the table never takes
    # on an object colour's hue.
    base = rng.uniform(205.0, 235.0) + np.array([6.0, 0.0, -14.0]) + rng.uniform(-5.0, 5.0, 3)
    ramp = np.linspace(-1.0, 1.0, image_size)
    direction = rng.uniform(-6.0, 6.0, size=2)
    shade = direction[0] * ramp[None, :] + direction[1] * ramp[:, None]
    noise = rng.normal(0.0, 3.0, size=(image_size, image_size, 3))
    image = base[None, None, :] + shade[:, :, None] + noise
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def generate_scene(rng: np.random.Generator, cfg: TabletopConfig | None = None) -> Scene:
    """Sample a scene (see the module docstring); deterministic for a given ``rng`` state."""
    cfg = cfg or TabletopConfig()
    for _ in range(_LAYOUT_TRIES):
        specs = _sample_specs(rng, cfg)
        corners = _place(rng, [size for _, _, size in specs], cfg.image_size)
        if corners is not None:
            break
    else:
        raise RuntimeError(f"could not place objects without overlap for {cfg}")
    image = _background(rng, cfg.image_size)
    objects = []
    for (shape, color, size), (x, y) in zip(specs, corners, strict=True):
        mask = np.zeros((cfg.image_size, cfg.image_size), dtype=bool)
        mask[y : y + size, x : x + size] = _shape_template(shape, size)
        image[mask] = COLORS[color]
        objects.append(TabletopObject(shape, color, size, mask, _mask_box(mask)))
    return Scene(image=image, objects=objects)


def _twin_location(scene: Scene, target: int, twin: int) -> str:
    """Side word telling ``target`` from its twin, on the axis where their centres differ most."""
    (tx, ty), (ux, uy) = scene.objects[target].center, scene.objects[twin].center
    if abs(tx - ux) >= abs(ty - uy):
        return "left" if tx < ux else "right"
    return "top" if ty < uy else "bottom"


def _ref_text(
    rng: np.random.Generator,
    scene: Scene,
    rounds: list[Round],
    k: int,
    cfg: TabletopConfig,
) -> tuple[str, str]:
    """Name round ``k``'s output for the round about to be appended; returns (text, form)."""
    target = rounds[k - 1].target
    if rng.random() < cfg.caption_ref_prob and scene.name_is_unique(target):
        return f"the {scene.objects[target].name}", "caption"
    forms = ["output", "instance"]
    if k == len(rounds):
        forms += ["it", "that"]
    form = forms[int(rng.integers(len(forms)))]
    text = form if form in ("it", "that") else format_reference(k, form)
    return text, form


def relation_singles_out(scene: Scene, target: int, relation: str, ref_target: int) -> bool:
    """Whether "the {name of target} {relation} {ref}" denotes only ``target``.

    Why public: the tests and any data audit use the same check as the generator.
    """
    ref_box = scene.objects[ref_target].box
    name = scene.objects[target].name
    matches = [
        j
        for j, obj in enumerate(scene.objects)
        if j != ref_target
        and obj.name == name
        and positional_relation(obj.box, ref_box) == relation
    ]
    return matches == [target]


def _candidates(scene: Scene, rounds: list[Round]) -> dict[str, list[tuple[int, int]]]:
    """Valid (target, referenced round) pairs per kind for the next round (round 0 = no ref)."""
    n_obj = len(scene.objects)
    last = rounds[-1].target if rounds else None
    seen = {rnd.target for rnd in rounds}
    fresh = [i for i in range(n_obj) if i not in seen]
    cands: dict[str, list[tuple[int, int]]] = {kind: [] for kind in KINDS}
    cands["describe"] = [(i, 0) for i in (fresh or [i for i in range(n_obj) if i != last])]
    for k, rnd in enumerate(rounds, start=1):
        ref_target = rnd.target
        if ref_target < 0:  # a MANY/AMBIGUOUS/NONE round: no one object to refer to
            continue
        for i in range(n_obj):
            if i in (ref_target, last):
                continue
            rel = positional_relation(scene.objects[i].box, scene.objects[ref_target].box)
            if rel in (SAME, OVERLAP):
                continue
            if relation_singles_out(scene, i, rel, ref_target):
                cands["relation"].append((i, k))
        twin = scene.twin_of(ref_target)
        if twin is not None and twin != last:
            cands["other"].append((twin, k))
        if ref_target != last:
            cands["again"].append((ref_target, k))
    return cands


def _sample_round(
    rng: np.random.Generator, scene: Scene, rounds: list[Round], cfg: TabletopConfig
) -> Round | None:
    """Pick a kind among those with candidates, then a candidate, then render its text."""
    if rounds and rounds[-1].answer == AMBIGUOUS:
        return _clarify_round(rng, scene, rounds[-1])
    cands = _candidates(scene, rounds)
    kinds = [kind for kind in KINDS if cands[kind]]
    extra = _answer_kind_options(scene, cfg)
    kinds += [kind for kind in extra if extra[kind][1]]
    if not kinds:
        return None
    used = {kind: sum(rnd.kind == kind for rnd in rounds) for kind in kinds}
    weights = np.array(
        [
            extra[kind][0]
            if kind in extra
            else _KIND_WEIGHTS[kind]
            * (_REPEAT_DECAY ** used[kind] if kind in ("other", "again") else 1)
            for kind in kinds
        ]
    )
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    if kind in extra:
        return _answer_kind_round(rng, scene, kind, extra[kind][1])
    options = cands[kind]
    if kind == "describe":
        w = np.array(
            [cfg.twin_describe_weight if scene.twin_of(i) is not None else 1.0 for i, _ in options]
        )
        target, k = options[int(rng.choice(len(options), p=w / w.sum()))]
    else:
        target, k = options[int(rng.integers(len(options)))]
    name = scene.objects[target].name
    twin = scene.twin_of(target)

    if kind == "describe":
        query = f"the {name}"
        if twin is not None:
            query += f" on the {_twin_location(scene, target, twin)}"
        return Round(query, target, [], kind, False, None)
    if kind == "other" and k == len(rounds):
        return Round(f"the other {name}", target, [k], kind, True, IMPLICIT_REF)
    ref, form = _ref_text(rng, scene, rounds, k, cfg)
    if kind == "relation":
        ref_box = scene.objects[rounds[k - 1].target].box
        rel = positional_relation(scene.objects[target].box, ref_box)
        return Round(f"the {name} {rel} {ref}", target, [k], kind, False, form)
    if kind == "other":
        return Round(f"the {name} that is not {ref}", target, [k], kind, True, form)
    return Round(f"{ref} again", target, [k], kind, twin is not None, form)


def _answer_kind_options(scene: Scene, cfg: TabletopConfig) -> dict[str, tuple[float, list]]:
    """Weight and options of the answer-kind rounds the config asks for (none by default,
    so a default config draws exactly what it did before)."""
    options: dict[str, tuple[float, list]] = {}
    if cfg.plural_weight:
        options["plural"] = (cfg.plural_weight, AK.plural_options(scene))
    if cfg.ambiguous_weight:
        options["ambiguous"] = (cfg.ambiguous_weight, AK.ambiguous_options(scene))
    if cfg.absent_weight:
        options["absent"] = (cfg.absent_weight, AK.absent_options(scene, SHAPES, tuple(COLORS)))
    return options


def _clarify_round(rng: np.random.Generator, scene: Scene, asked: Round) -> Round:
    """The operator's reply to an AMBIGUOUS round: it picks one of the candidates."""
    reply, chosen = AK.clarify_reply(rng, scene, asked.targets)
    return Round(reply, chosen, [], "clarify")


def _answer_kind_round(rng: np.random.Generator, scene: Scene, kind: str, options: list) -> Round:
    """A plural, ambiguous or absent round from one of its options."""
    option = options[int(rng.integers(len(options)))]
    answer = AK.KIND_ANSWERS[kind]
    if kind == "plural":
        phrases, members = option
        query = phrases[int(rng.integers(len(phrases)))]
        return Round(query, -1, [], kind, targets=members, answer=answer, plural=True)
    if kind == "ambiguous":
        name = scene.objects[option[0]].name
        return Round(f"the {name}", -1, [], kind, targets=option, answer=answer)
    query, plural = option
    return Round(query, -1, [], kind, answer=answer, plural=plural)


def generate_conversation(
    rng: np.random.Generator, cfg: TabletopConfig | None = None
) -> TabletopConversation:
    """A scene plus ``min_rounds..max_rounds`` rounds (fewer only if no valid round remains)."""
    cfg = cfg or TabletopConfig()
    scene = generate_scene(rng, cfg)
    n_rounds = int(rng.integers(cfg.min_rounds, cfg.max_rounds + 1))
    rounds: list[Round] = []
    while len(rounds) < n_rounds:
        rnd = _sample_round(rng, scene, rounds, cfg)
        if rnd is None:
            break
        rounds.append(rnd)
    if rounds and rounds[-1].answer == AMBIGUOUS:  # a question is always answered
        if len(rounds) < cfg.max_rounds:
            rounds.append(_clarify_round(rng, scene, rounds[-1]))
        else:
            rounds.pop()
    return TabletopConversation(scene=scene, rounds=rounds)


def generate_dataset(
    seed: int, n: int, cfg: TabletopConfig | None = None
) -> list[TabletopConversation]:
    """``n`` conversations, each from its own child of ``SeedSequence(seed)``.

    Why child seeds: conversation ``i`` depends only on ``(seed, i)``, so a longer dataset
    extends a shorter one instead of reshuffling it.
    """
    cfg = cfg or TabletopConfig()
    children = np.random.SeedSequence(seed).spawn(n)
    return [generate_conversation(np.random.default_rng(child), cfg) for child in children]
