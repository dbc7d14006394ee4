"""The MRSeg conversation file: what the dataset builders write and the trainers read.

One conversation per line (JSON Lines), so a corrupt record is reported by file and line and
the rest of the file stays usable. Every record is self-contained: the target mask of each
round is stored as COCO compressed RLE, so training needs the images but not the source
annotations. Example (wrapped)::

    {"id": "refcoco-train-9-0", "source": "refcoco", "split": "train",
     "image": "train2014/COCO_train2014_000000000009.jpg", "height": 480, "width": 640,
     "rounds": [
       {"query": "the bowl on the left", "ref_rounds": [], "caption": "bowl on the left",
        "mask": {"size": [480, 640], "counts": "..."}, "annotation_id": 1038967},
       {"query": "the bowl to the right of <the output of round 1>", "ref_rounds": [1],
        "caption": "bowl", "mask": {...}, "annotation_id": 1039564}]}

Fields of a round: ``query`` (the user text, references written in it), ``ref_rounds``
(1-based earlier rounds it refers to; always earlier than the round itself), ``mask`` (the
target, RLE at the image's size), ``caption`` (a short description of the target: how later
rounds may name it, and what LISA's Approach 2 substitutes for reference tokens),
``annotation_id`` (the source annotation, for provenance; null for derived masks),
``answer`` (null = the model's standard segmentation answer) and ``input_mask`` (optional,
null when absent: a mask the *user* supplies with the query, RLE like ``mask``; the query marks
where its encoding goes with :data:`INPUT_MASK_TOKEN`. MRSeg-hard uses it: "[encode X] segment
the other <class>" is a single round whose input is X and whose target is the other instance),
``kind`` (the answer kind, one of :data:`segllm_ros.engine.answers.ANSWER_KINDS`; "one" when
absent) and ``targets`` (optional: every target instance as RLE, in reading order, when the
answer has several; ``mask`` is then their union, so readers of ``mask`` keep working). A build
with ``ambiguous: multi`` writes ``"kind": "ambiguous"`` rounds with ``targets``. Both keys are
left out when they have their defaults, so files without them (older builds, the default build)
read and write unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segllm_ros.engine.answers import ANSWER_KINDS, ONE
from segllm_ros.interface.mask_codec import mask_to_rle, rle_to_mask

INPUT_MASK_TOKEN = "<input mask>"
"""Placeholder in a query for the encoding of the round's ``input_mask``."""


class RecordError(ValueError):
    """A conversation record that breaks the schema; the message names file and line."""


encode_mask = mask_to_rle
"""Bool HxW -> COCO compressed RLE with a JSON-safe ``counts`` string (the project's codec,
:func:`segllm_ros.interface.mask_codec.mask_to_rle`, under the schema's name)."""

decode_mask = rle_to_mask
"""COCO RLE (compressed string or uncompressed list counts) -> bool HxW
(:func:`segllm_ros.interface.mask_codec.rle_to_mask`)."""


@dataclass
class RoundRecord:
    query: str
    mask: dict
    ref_rounds: list[int] = field(default_factory=list)
    caption: str = ""
    annotation_id: int | str | None = None
    answer: str | None = None
    input_mask: dict | None = None
    kind: str = ONE
    targets: list[dict] | None = None


_UNWRITTEN_DEFAULTS: dict[str, object] = {"kind": ONE, "targets": None}
"""Round keys written only when they differ from these defaults (added by issue 17: files of
the default build stay byte-identical to those written before)."""


@dataclass
class ConversationRecord:
    id: str
    source: str
    split: str
    image: str  # relative to the dataset's image root
    height: int
    width: int
    rounds: list[RoundRecord]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first broken field."""
        if not self.rounds:
            raise ValueError(f"conversation {self.id!r} has no rounds")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"conversation {self.id!r}: bad image size {self.height}x{self.width}")
        for i, rnd in enumerate(self.rounds, start=1):
            if not rnd.query.strip():
                raise ValueError(f"conversation {self.id!r} round {i}: empty query")
            bad = [k for k in rnd.ref_rounds if not 1 <= k < i]
            if bad:
                raise ValueError(
                    f"conversation {self.id!r} round {i}: ref_rounds {bad} "
                    "do not point to earlier rounds"
                )
            if list(rnd.mask.get("size", [])) != [self.height, self.width]:
                raise ValueError(
                    f"conversation {self.id!r} round {i}: mask size "
                    f"{rnd.mask.get('size')} != image {[self.height, self.width]}"
                )
            if rnd.input_mask is not None and (
                list(rnd.input_mask.get("size", [])) != [self.height, self.width]
                or INPUT_MASK_TOKEN not in rnd.query
            ):
                raise ValueError(
                    f"conversation {self.id!r} round {i}: input_mask needs the "
                    f"image size and {INPUT_MASK_TOKEN!r} in the query"
                )
            if rnd.kind not in ANSWER_KINDS:
                raise ValueError(
                    f"conversation {self.id!r} round {i}: kind {rnd.kind!r} not one of "
                    f"{list(ANSWER_KINDS)}"
                )
            if rnd.targets is not None and (
                not rnd.targets
                or any(list(t.get("size", [])) != [self.height, self.width] for t in rnd.targets)
            ):
                raise ValueError(
                    f"conversation {self.id!r} round {i}: targets must be a non-empty list of "
                    f"masks of the image size {[self.height, self.width]}"
                )

    def to_json(self) -> str:
        data = asdict(self)
        for rnd in data["rounds"]:
            for key, default in _UNWRITTEN_DEFAULTS.items():
                if rnd[key] == default:
                    del rnd[key]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> ConversationRecord:
        rounds = [RoundRecord(**r) for r in data["rounds"]]
        record = cls(**{**data, "rounds": rounds})
        record.validate()
        return record


def write_conversations(path: str | Path, records: Iterable[ConversationRecord]) -> int:
    """Write records atomically (a crash never leaves a half-written file); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        with tmp.open("w") as f:
            for record in records:
                record.validate()
                f.write(record.to_json() + "\n")
                count += 1
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed build leaves neither file behind
        raise
    os.replace(tmp, path)
    return count


def iter_conversations(path: str | Path) -> Iterator[tuple[int, ConversationRecord | RecordError]]:
    """(line number, record) for every line; a broken line yields a ``RecordError`` that
    names the file and line instead of stopping the whole file."""
    with Path(path).open() as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, ConversationRecord.from_dict(json.loads(line))
            except (ValueError, TypeError, KeyError) as exc:
                yield line_no, RecordError(f"{path}:{line_no}: {type(exc).__name__}: {exc}")


def read_conversations(path: str | Path) -> list[ConversationRecord]:
    """All records of a file; raises the first ``RecordError`` (strict readers, tests)."""
    records = []
    for _, item in iter_conversations(path):
        if isinstance(item, RecordError):
            raise item
        records.append(item)
    return records
