"""Evaluation: per-round metrics on MRSeg-format data (``evaluate``), the demo model's
held-out tabletop bar (``tabletop_eval``) and what its prompt encodes (``shape_probe``)."""
