"""Generators: one module per conversation family of the SegLLM appendix."""
