"""Readers: one module per real annotation format, each returning validated ``ImageEntry``s."""
