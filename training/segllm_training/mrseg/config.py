"""Every knob of an MRSeg build in one place.

Why one dataclass: the probabilities and limits below *are* the dataset's definition (they
follow the SegLLM appendix); a build, the bench and the tests all read them from here, so a
change shows up everywhere at once and is recorded with the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    "attributes_coco": 4,
}
"""Maximum rounds per conversation and source, as the generation rules bound them:
positional 2-18 annotations (one round each); hierarchical up to 4 instances x (1 + 4 parts);
interactional 2 rounds; MRSeg-hard, semantic and reasoning single-round; attributes up to
``attributes_max_instances``. The stats table reports the observed maximum next to these."""


@dataclass
class BuildConfig:
    """Generation rules and their probabilities (defaults = the seed appendix)."""

    seed: int = 0
    caption_ref_prob: float = 0.5
    """An earlier output is named by its caption with this probability, otherwise as
    ``<instance i>`` or ``<the output of round i>`` (half each)."""
    self_query_prob: float = 1 / 3
    """Positional: a round queries the object itself, otherwise relates it to an earlier round."""
    same_instance_prob: float = 0.1
    """Positional: a relating round re-targets an earlier round's object ("the same as")."""
    positional_min: int = 2
    positional_max: int = 18
    hierarchical_max_instances: int = 4
    hierarchical_max_parts: int = 4
    interactional_max_relationships: int = 4
    semantic_max_classes: int = 4
    """Semantic sources: single-round conversations per image (one class each)."""
    attributes_max_instances: int = 4
    min_area: int = 16
    """Annotations whose mask covers fewer pixels are never targets (invisible in practice)."""
    sam_config: dict = field(default_factory=dict)
    """Visual Genome: ``SamConfig`` fields of the box-prompted SAM (empty = ViT-H defaults)."""
    sam_checkpoint: str | None = None
    """Visual Genome: official SAM state dict; None = random weights (tests only)."""
