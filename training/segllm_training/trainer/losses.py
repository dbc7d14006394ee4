"""The loss of one teacher-forced batch as the trainers use it: the model's forward pass
(``SegLLMOutput``, losses filled from the batch's targets) and the metrics they log. The loss
terms themselves are ``segllm_ros.model.losses``."""

from __future__ import annotations

import torch

from segllm_ros.model.batch import Batch
from segllm_ros.model.losses import LossWeights
from segllm_ros.model.segllm import SegLLMModel


def forward_batch(
    model: SegLLMModel, batch: Batch, w: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss and, as floats, each term (``text``, ``mask``, ``iou_pred``,
    ``ref_mask`` when references were decoded), the decoded masks' mean IoU and the loss."""
    out = model(batch, w)
    metrics = {name: value.item() for name, value in out.losses.items()}
    metrics["iou"] = out.mask_iou.mean().item()
    metrics["loss"] = out.loss.item()
    return out.loss, metrics
