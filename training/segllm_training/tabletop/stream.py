"""Tabletop conversations as training samples, and the seed that no training stream uses.

Training streams (``trainer.data.TabletopStream``) are seeded with the run's ``seed`` (0, 1
in the demo recipe); held-out conversations come from :data:`EVAL_SEED`, far from any of
them.
"""

from __future__ import annotations

import numpy as np

from segllm_training.tabletop.scenes import Round, Scene, TabletopConversation
from segllm_training.trainer.batch import Sample, SampleRound

EVAL_SEED = 1_000_003
"""Seed of the held-out conversations (evaluation, ablation, shape probe)."""


def sample_round(scene: Scene, rnd: Round) -> SampleRound:
    """A round's training targets: the union of its objects (what later rounds refer to)
    and, for rounds that are not one object, each object in reading order."""
    masks = [scene.target_mask(i) for i in rnd.targets]
    single = len(rnd.targets) == 1 and not rnd.plural
    return SampleRound(
        rnd.query,
        list(rnd.ref_rounds),
        np.any(masks, axis=0) if masks else np.zeros(scene.image.shape[:2], dtype=bool),
        instances=None if single else masks,
        plural=rnd.plural,
    )


def to_sample(conv: TabletopConversation) -> Sample:
    """The whole conversation as a training sample: every round but the replies to "which
    one?" has a mask loss (the engine, not the model, resolves a reply to a candidate), and
    the model draws the reference-token dropout."""
    decoded = [i for i, r in enumerate(conv.rounds) if r.kind != "clarify"]
    return Sample(
        conv.scene.image,
        [sample_round(conv.scene, r) for r in conv.rounds],
        mask_rounds=None if len(decoded) == len(conv.rounds) else decoded,
    )
