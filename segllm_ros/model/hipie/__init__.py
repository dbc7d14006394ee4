"""HIPIE-R50 in plain PyTorch: the mask decoder of the authors' released SegLLM checkpoints."""

from segllm_ros.model.hipie.hipie import HipieConfig, HipieOutputs, HipieR50

__all__ = ["HipieConfig", "HipieOutputs", "HipieR50"]
