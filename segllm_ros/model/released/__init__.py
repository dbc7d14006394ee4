"""The authors' released SegLLM (LLaVA-1.5 + HIPIE-R50) as model family ``segllm-hipie``."""
