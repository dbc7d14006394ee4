"""segllm_training: MRSeg data generation, SegLLM training and per-round evaluation."""
