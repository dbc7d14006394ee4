"""Tabletop conversations as training samples, and the seed that no training stream uses.

Training streams (``trainer.data.TabletopStream``) are seeded with the run's ``seed`` (0, 1
in the demo recipe); held-out conversations come from :data:`EVAL_SEED`, far from any of
them.
"""

from __future__ import annotations

from segllm_training.tabletop.scenes import TabletopConversation
from segllm_training.trainer.batch import Sample, SampleRound

EVAL_SEED = 1_000_003
"""Seed of the held-out conversations (evaluation, ablation, shape probe)."""


def to_sample(conv: TabletopConversation) -> Sample:
    """The whole conversation as a training sample: every round has a mask loss and the model
    draws the reference-token dropout."""
    return Sample(
        conv.scene.image,
        [
            SampleRound(r.query, list(r.ref_rounds), conv.scene.target_mask(r.target))
            for r in conv.rounds
        ],
    )
