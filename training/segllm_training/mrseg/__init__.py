"""MRSeg: multi-round conversations built by rules from public segmentation annotations."""
