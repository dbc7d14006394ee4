"""Synthetic tabletop scenes and conversations: the generator (``scenes``), how the demo
recipe draws them (``stream``) and the bundled demo frames (``demo_data``).

The generator's public names are importable from here, as they were before the package
split."""

from segllm_training.tabletop.scenes import (
    COLORS,
    IMPLICIT_REF,
    KINDS,
    REF_FORMS,
    SHAPES,
    Round,
    Scene,
    TabletopConfig,
    TabletopConversation,
    TabletopObject,
    generate_conversation,
    generate_dataset,
    generate_scene,
    relation_singles_out,
    tokenize,
    vocabulary,
)

__all__ = [
    "COLORS",
    "IMPLICIT_REF",
    "KINDS",
    "REF_FORMS",
    "SHAPES",
    "Round",
    "Scene",
    "TabletopConfig",
    "TabletopConversation",
    "TabletopObject",
    "generate_conversation",
    "generate_dataset",
    "generate_scene",
    "relation_singles_out",
    "tokenize",
    "vocabulary",
]
