"""How training and evaluation draw tabletop conversations: one seeded stream per run, and
one seed that no training stream uses.

Training streams are seeded with the run's ``seed`` (0, 1, ... in the recipes); held-out
conversations come from :data:`EVAL_SEED`, far from any of them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from segllm_training.tabletop.scenes import (
    TabletopConfig,
    TabletopConversation,
    generate_conversation,
)
from segllm_training.trainer.batch import Sample, SampleRound

EVAL_SEED = 1_000_003
"""Seed of the held-out conversations (evaluation, ablation, shape probe)."""


def conversation_stream(seed: int, cfg: TabletopConfig) -> Iterator[TabletopConversation]:
    """Conversations one after another from one generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    while True:
        yield generate_conversation(rng, cfg)


def to_sample(conv: TabletopConversation) -> Sample:
    """The whole conversation as a training sample: every round has a mask loss and the model
    draws the reference-token dropout."""
    return Sample(conv.scene.image, [SampleRound(r.query, list(r.ref_rounds),
                                                 conv.scene.target_mask(r.target))
                                     for r in conv.rounds])
