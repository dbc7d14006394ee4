"""Every knob of an MRSeg build in one place.

Why one dataclass: the probabilities and limits below *are* the dataset's definition (they
follow the SegLLM appendix); a build, the bench and the tests all read them from here, so a
change shows up everywhere at once and is recorded with the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MAX_ROUNDS: dict[str, int] = {
    "refcoco": 18,
    "refcoco+": 18,
    "refcocog": 18,
    "lvis": 18,
    "paco_lvis": 20,
    "pascal_part": 20,
    "visual_genome": 2,
    "mrseg_hard": 1,
    "ade20k": 1,
    "cocostuff": 1,
    "reasonseg": 1,
    "attributes_coco": 1,
}
"""Maximum rounds per conversation and source, as the generation rules bound them:
positional 2-18 annotations (one round each); hierarchical up to 4 instances x (1 + 4 parts);
interactional 2 rounds; MRSeg-hard, semantic, reasoning and attributes single-round (Table A1).
The stats table reports the observed maximum next to these."""

AMBIGUOUS_MODES: tuple[str, ...] = ("keep", "drop", "multi")
"""What a build does with a positional round that several instances satisfy
(:mod:`segllm_training.mrseg.generators.ambiguity`): keep it as the seed does, drop it, or
keep it with every candidate as a target."""


@dataclass
class BuildConfig:
    """Generation rules and their probabilities (defaults = the SegLLM appendix)."""

    seed: int = 0
    caption_ref_prob: float = 0.5
    """An earlier output is named by its caption with this probability, otherwise as
    ``<instance i>`` or ``<the output of round i>`` (half each)."""
    self_query_prob: float = 1 / 3
    """Positional: a round queries the object itself, otherwise relates it to an earlier round
    ("the same as" when both rounds' expressions refer to one object)."""
    positional_min: int = 2
    positional_max: int = 18
    """Positional: annotations per conversation; for RefCOCO/+/g an annotation is one referring
    expression, so one object may be asked about several times."""
    overlap_min: float = 0.5
    """Positional: two boxes are "overlapping with" each other only when their intersection
    covers at least this share of the smaller box; otherwise the direction comes from the
    edges and centres (:func:`segllm_training.relations.positional_relation`)."""
    ambiguous: str = "keep"
    """Positional: a relational round ("the cup to the left of <ref>") that more than one
    instance of the class satisfies. ``keep``: one of them is the target, as in the seed;
    ``drop``: the round asks for its object by its own caption instead (a self query);
    ``multi``: every satisfying instance is a target (``targets`` in reading order, ``mask``
    their union, ``kind`` "ambiguous") and later rounds relate only to single-target rounds.
    Every build counts such rounds (the stats' ambiguity table)."""
    hierarchical_max_instances: int = 4
    hierarchical_max_parts: int = 4
    interactional_max_relationships: int = 4
    semantic_max_classes: int = 3
    """Semantic sources: single-round conversations per image (one class each). Table A1 has
    2.9-3.0 conversations per image for ADE20K and COCO-Stuff: min(3, classes present)."""
    attributes_max_instances: int = 4
    """Attributes-COCO: 1 to this many described instances per image, each its own
    single-round conversation (Table A1: max rounds 1)."""
    min_area: int = 16
    """Annotations whose mask covers fewer pixels are never targets (invisible in practice)."""
    visual_genome_val_share: float = 0.1
    """Visual Genome has no official split; this share of its images, chosen by a hash of the
    image id (the same for every build), is ``val`` (Table A1: 10,524 of ~108k images)."""
    sam_config: dict = field(default_factory=dict)
    """Visual Genome: ``SamConfig`` fields of the box-prompted SAM (empty = ViT-H defaults)."""
    sam_checkpoint: str | None = None
    """Visual Genome: official SAM state dict; a build refuses to run without it ..."""
    allow_random_sam: bool = False
    """... unless this is set (tests, fixtures): masks then come from random weights."""

    def __post_init__(self) -> None:
        if self.ambiguous not in AMBIGUOUS_MODES:
            raise ValueError(
                f"ambiguous must be one of {list(AMBIGUOUS_MODES)}, got {self.ambiguous!r}"
            )

    def sam_weights(self) -> str | None:
        """The SAM checkpoint Visual Genome's masks come from; raises instead of silently
        using random weights (None) unless ``allow_random_sam``."""
        if self.sam_checkpoint is None:
            if self.allow_random_sam:
                return None
            raise ValueError(
                "visual_genome takes its masks from a box-prompted SAM: pass --sam-checkpoint "
                "PATH (the official state dict, e.g. sam_vit_h_4b8939.pth); --allow-random-sam "
                "builds with random weights instead (tests only: the masks are meaningless)"
            )
        if not Path(self.sam_checkpoint).is_file():
            raise ValueError(f"SAM checkpoint {self.sam_checkpoint} not found")
        return self.sam_checkpoint
