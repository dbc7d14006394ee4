"""Training data: MRSeg files and synthetic tabletop conversations, mixed, made into Samples.

Every conversation, whatever its origin, is a :class:`ConversationRecord` plus its image
(:class:`Item`), so the LISA conversions, truncation and evaluation treat them alike.

Sampling is a pure function of (seed, global sample index), as upstream LISA/SegLLM sample:
pick a source by weight, then an item uniformly. That makes resume exact (the sampler state
is one integer) and lets N processes draw disjoint slices of the same global batch.
Broken data never crashes a step: a corrupt line is reported (file:line) when the file is
read, a missing or unreadable image when it is drawn; both are skipped and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from segllm_ros.engine.answers import MANY, NONE
from segllm_ros.engine.references import resolve_references
from segllm_training.mrseg import lisa
from segllm_training.mrseg.schema import (
    INPUT_MASK_TOKEN,
    ConversationRecord,
    RecordError,
    RoundRecord,
    decode_mask,
    encode_mask,
    iter_conversations,
)
from segllm_training.tabletop import TabletopConfig, TabletopConversation, generate_conversation
from segllm_training.tabletop.stream import sample_round as tabletop_round
from segllm_training.tabletop.stream import to_sample as whole_conversation
from segllm_training.trainer.batch import Sample, SampleRound

log = logging.getLogger(__name__)

MIXING = ("uniform", "proportional")


class DataError(RuntimeError):
    """One conversation that cannot be used; the message names its file and index."""


@dataclass
class Item:
    """A conversation ready for training or evaluation."""

    record: ConversationRecord
    image: np.ndarray  # HxWx3 uint8 RGB
    # Round (1-based) -> mask of the object a wrong answer would pick (a tabletop twin): the
    # evaluation's "twin choice" asks whether the prediction overlaps the target more.
    distractors: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class SourceConfig:
    """One data source: an MRSeg JSONL file (``path`` + ``image_root``) or, with
    ``tabletop`` set, ``size`` synthetic conversations from ``seed``."""

    name: str = ""
    path: str | None = None
    image_root: str = "."
    weight: float = 1.0
    lisa: str | None = None  # approach1 / approach2
    tabletop: dict | None = None  # TabletopConfig kwargs
    size: int = 100_000
    seed: int = 0


def tabletop_item(conv: TabletopConversation, conv_id: str, split: str = "train") -> Item:
    """A tabletop conversation as an MRSeg record (caption = the object's name, which for a
    twin fits both twins, as a description does; a round that is not one object records its
    kind and every target, ``mask`` being their union)."""
    scene = conv.scene
    h, w = scene.image.shape[:2]
    rounds = []
    for r in conv.rounds:
        sample = tabletop_round(scene, r)
        rounds.append(
            RoundRecord(
                query=r.query,
                mask=encode_mask(sample.mask),
                ref_rounds=list(r.ref_rounds),
                caption=scene.objects[r.target].name if r.target >= 0 else "",
                kind=r.answer,
                targets=[encode_mask(m) for m in sample.instances] if sample.instances else None,
            )
        )
    distractors = {
        i: scene.target_mask(twin)
        for i, r in enumerate(conv.rounds, start=1)
        if r.ambiguous_without_reference and (twin := scene.twin_of(r.target)) is not None
    }
    record = ConversationRecord(conv_id, "tabletop", split, "", h, w, rounds)
    return Item(record, scene.image, distractors)


class Source:
    """Random access to the conversations of one source."""

    def __init__(self, cfg: SourceConfig, skipped: Counter | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name or (Path(cfg.path).stem if cfg.path else "tabletop")
        self.skipped = skipped if skipped is not None else Counter()
        self.records: list[tuple[int, ConversationRecord]] = []
        self.tabletop = TabletopConfig(**cfg.tabletop) if cfg.tabletop is not None else None
        if self.tabletop is None:
            if not cfg.path:
                raise ValueError("a source needs a path or a tabletop config")
            for line, item in iter_conversations(cfg.path):
                if isinstance(item, RecordError):
                    log.warning("skipping corrupt record %s", item)
                    self.skipped["corrupt_record"] += 1
                else:
                    self.records.append((line, item))
            if not self.records:
                raise DataError(f"{cfg.path}: no usable conversation")

    def __len__(self) -> int:
        return self.cfg.size if self.tabletop is not None else len(self.records)

    def load(self, index: int) -> Item:
        """Item ``index``, with the source's LISA conversion applied; ``DataError`` names the
        file and line of a conversation whose image is missing or does not fit."""
        if self.tabletop is not None:
            rng = np.random.default_rng([self.cfg.seed, index])
            item = tabletop_item(generate_conversation(rng, self.tabletop), f"{self.name}-{index}")
        else:
            line, record = self.records[index]
            item = Item(record, self._image(record, line))
        item.record = lisa.convert(item.record, self.cfg.lisa)
        return item

    def _image(self, record: ConversationRecord, line: int) -> np.ndarray:
        path = Path(self.cfg.image_root) / record.image
        where = f"{self.cfg.path}:{line} ({record.id})"
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if bgr is None:
            raise DataError(f"{where}: image {path} is missing or unreadable")
        if bgr.shape[:2] != (record.height, record.width):
            raise DataError(
                f"{where}: image {path} is {bgr.shape[1]}x{bgr.shape[0]}, "
                f"record says {record.width}x{record.height}"
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def source_weights(sources: list[Source], mixing: str) -> np.ndarray:
    """Sampling probability per source: configured weight, times the size when
    ``proportional`` (upstream's uniform-per-dataset mixing otherwise)."""
    if mixing not in MIXING:
        raise ValueError(f"mixing must be one of {MIXING}, got {mixing!r}")
    w = np.array(
        [s.cfg.weight * (len(s) if mixing == "proportional" else 1.0) for s in sources], dtype=float
    )
    if not (w > 0).any():
        raise ValueError("all source weights are zero")
    return w / w.sum()


@dataclass
class SampleConfig:
    """How a conversation becomes a training sample."""

    max_rounds: int = 6  # conversations truncated to this many rounds
    mask_rounds: int = 2  # mask loss on this many randomly chosen rounds (0 = all)
    max_tries: int = 50  # draws per sample before giving up on broken data


class MixtureSampler:
    """Deterministic stream of training samples; ``position`` is the next global index."""

    def __init__(
        self,
        sources: list[Source],
        mixing: str,
        seed: int,
        sample_cfg: SampleConfig,
        reference_dropout: float,
    ) -> None:
        self.sources = sources
        self.probs = source_weights(sources, mixing)
        self.seed = seed
        self.sample_cfg = sample_cfg
        self.reference_dropout = reference_dropout
        self.position = 0
        self.skipped: Counter = sources[0].skipped if sources else Counter()

    def state_dict(self) -> dict:
        return {"position": self.position, "skipped": dict(self.skipped)}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        self.skipped.clear()
        self.skipped.update(state.get("skipped", {}))

    def sample(self, index: int) -> Sample:
        """Global sample ``index``: source, item, truncation, mask-loss rounds and the
        reference-token dropout draw all come from ``rng([seed, index])``."""
        rng = np.random.default_rng([self.seed, index])
        for _ in range(self.sample_cfg.max_tries):
            source = self.sources[int(rng.choice(len(self.sources), p=self.probs))]
            item_index = int(rng.integers(len(source)))
            try:
                item = source.load(item_index)
            except DataError as exc:
                log.warning("skipping: %s", exc)
                self.skipped["missing_image"] += 1
                continue
            return to_sample(item, rng, self.sample_cfg, self.reference_dropout)
        raise DataError(
            f"no usable conversation in {self.sample_cfg.max_tries} draws "
            f"for sample {index}; skipped so far: {dict(self.skipped)}"
        )

    def next_batch(self, size: int, rank: int = 0, world: int = 1) -> list[Sample]:
        """This process's slice of the next global batch of ``size * world`` samples."""
        start = self.position + rank * size
        self.position += size * world
        return [self.sample(i) for i in range(start, start + size)]


class TabletopStream:
    """The demo recipe's data order (``data.stream``): tabletop conversations one after
    another from one generator seeded with the run's seed, each a whole-conversation sample.
    The state is the generator's, so a resumed run continues the same stream."""

    def __init__(self, sources: list[Source], seed: int) -> None:
        if len(sources) != 1 or sources[0].tabletop is None or sources[0].cfg.lisa:
            raise ValueError(
                "data.stream needs exactly one tabletop source without a LISA conversion"
            )
        self.cfg = sources[0].tabletop
        self.rng = np.random.default_rng(seed)
        self.position = 0
        self.skipped = sources[0].skipped  # synthetic data: stays empty

    def state_dict(self) -> dict:
        return {"position": self.position, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        self.rng.bit_generator.state = state["rng"]

    def next_batch(self, size: int, rank: int = 0, world: int = 1) -> list[Sample]:
        """This process's slice of the next ``size * world`` conversations."""
        convs = [generate_conversation(self.rng, self.cfg) for _ in range(size * world)]
        self.position += size * world
        return [whole_conversation(c) for c in convs[rank * size : (rank + 1) * size]]


def to_sample(
    item: Item,
    rng: np.random.Generator | None = None,
    cfg: SampleConfig | None = None,
    reference_dropout: float = 0.0,
) -> Sample:
    """Record + image -> Sample. References are resolved as the inference engine resolves
    them (explicit ``ref_rounds``, round tokens, then "it"/"the other"/... = previous round),
    so training sees the same reference input inference will give."""
    cfg = cfg or SampleConfig(max_rounds=len(item.record.rounds), mask_rounds=0)
    rounds = item.record.rounds[: cfg.max_rounds]
    out = []
    for i, rnd in enumerate(rounds):
        if rnd.input_mask is None:
            refs = resolve_references(rnd.query, rnd.ref_rounds, i, max_refs=len(rounds))
            mask = decode_mask(rnd.mask)
            instances = [decode_mask(t) for t in rnd.targets] if rnd.targets else None
            if rnd.kind == NONE:
                instances = []
            out.append(
                SampleRound(rnd.query, refs, mask, instances=instances, plural=rnd.kind == MANY)
            )
        else:  # the query's "the other" means the given mask, not the previous round
            query = " ".join(rnd.query.replace(INPUT_MASK_TOKEN, " ").split())
            out.append(
                SampleRound(
                    query,
                    list(rnd.ref_rounds),
                    decode_mask(rnd.mask),
                    [decode_mask(rnd.input_mask)],
                )
            )
    sample = Sample(item.image, out)
    if rng is not None:
        if 0 < cfg.mask_rounds < len(out):
            sample.mask_rounds = sorted(
                int(k) for k in rng.choice(len(out), cfg.mask_rounds, replace=False)
            )
        n_refs = sum(len(r.ref_rounds) + len(r.input_masks) for r in out)
        sample.ref_keep = (rng.random(n_refs) >= reference_dropout).tolist()
    return sample
