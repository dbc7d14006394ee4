"""Weight-only quantisation of the LLM (torchao), so a 7B SegLLM fits a 16 GB Jetson.

Only the decoder's linear layers are quantised: they hold almost all of the LLM's weights,
and a later round is bound by reading them. Embeddings and the LM head (tied, and where the
``<seg>``/``<ref>`` rows live), the vision tower, the projectors and SAM keep their precision.
``int8`` is per output channel; ``int4`` uses groups along the input (torchao's packed
tinygemm layout on CUDA; on a CPU its int4 values are stored unpacked in int8, so it shows the
accuracy of int4, not its memory).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["QUANT_SCHEMES", "group_size_for", "quantize_llm", "weight_nbytes"]

QUANT_SCHEMES = ("none", "int8", "int4")
_GROUP_SIZES = (128, 64, 32)


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def group_size_for(module: nn.Module) -> int:
    """The largest int4 group size (128, 64 or 32) that divides every linear layer's input."""
    widths = {m.in_features for m in _linears(module)}
    for size in _GROUP_SIZES:
        if all(w % size == 0 for w in widths):
            return size
    raise ValueError(
        f"no int4 group size in {_GROUP_SIZES} divides the LLM's layer widths "
        f"{sorted(widths)}; use int8"
    )


def quantize_llm(model: nn.Module, scheme: str) -> nn.Module:
    """Quantise ``model.llm``'s decoder linears in place (``scheme`` in ``QUANT_SCHEMES``);
    returns ``model``."""
    if scheme not in QUANT_SCHEMES:
        raise ValueError(f"llm_quant must be one of {QUANT_SCHEMES}, got {scheme!r}")
    if scheme == "none":
        return model
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
        quantize_,
    )
    from torchao.quantization.granularity import PerGroup

    decoder = model.llm.get_decoder()
    if scheme == "int8":
        config = Int8WeightOnlyConfig()
    elif next(decoder.parameters()).device.type == "cuda":
        config = Int4WeightOnlyConfig(group_size=group_size_for(decoder))
    else:
        config = IntxWeightOnlyConfig(
            weight_dtype=torch.int4, granularity=PerGroup(group_size_for(decoder))
        )
    quantize_(decoder, config, filter_fn=lambda m, _name: isinstance(m, nn.Linear))
    return model


def weight_nbytes(module: nn.Module) -> int:
    """Bytes of a module's weights as stored (quantised tensors count their int data and
    scales)."""
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        parts = [tensor]
        if hasattr(tensor, "__tensor_flatten__"):
            names, _ = tensor.__tensor_flatten__()
            parts = [getattr(tensor, n) for n in names]
        total += sum(p.numel() * p.element_size() for p in parts)
    return total
