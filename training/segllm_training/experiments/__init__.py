"""Studies run on top of the trainer (``ablation``: how earlier masks are encoded)."""
