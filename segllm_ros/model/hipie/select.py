"""Upstream's choice of SegLLM's answer among HIPIE's queries (kept outside the exported
graph: NMS is data-dependent).

Each query scores "reference" (mean logit of the first half of the text tokens) and "target"
(second half); a score is sqrt(sigmoid(class) * sigmoid(IoU)). Per-class NMS at IoU 0.7 on the
query's best class, the top (query, class) pairs, and the best pair labelled "target" wins.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def pairwise_iou(boxes: Tensor) -> Tensor:
    """(K, 4) xyxy -> (K, K) IoU."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area[:, None] + area[None, :] - inter)


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS within each label; kept indices by decreasing score (torchvision's
    ``batched_nms`` semantics). Runs on the CPU (about 100 boxes; the greedy loop would
    otherwise sync with the GPU once per box); indices come back on the input's device."""
    device = boxes.device
    boxes, scores, labels = (t.detach().float().cpu() for t in (boxes, scores, labels))
    order = scores.argsort(descending=True, stable=True)
    iou = pairwise_iou(boxes[order])
    same = labels[order][:, None] == labels[order][None, :]
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= same[i] & (iou[i] > iou_threshold)
    return order[torch.tensor(keep, dtype=torch.long)].to(device)


def query_scores(logits: Tensor, iou: Tensor) -> Tensor:
    """logits (Q, T), iou (Q, 1) -> (Q, 2) scores for (reference, target)."""
    half = logits.shape[-1] // 2
    classes = torch.stack([logits[:, :half].mean(-1), logits[:, half:].mean(-1)], -1)
    return torch.sqrt(classes.sigmoid() * iou.sigmoid())


def ranked_instances(
    prob: Tensor, boxes: Tensor, nms_iou: float = 0.7, max_instances: int = 100
) -> tuple[Tensor, Tensor, Tensor]:
    """Upstream's instance list: NMS on each query's best class, then the top (query, class)
    pairs of the kept queries. prob (Q, 2) from ``query_scores``, boxes (Q, 4) cxcywh.
    Returns (query indices, labels 0 = reference / 1 = target, scores), best first."""
    best, labels = prob.max(1)
    keep = batched_nms(box_cxcywh_to_xyxy(boxes), best, labels, nms_iou)
    top = prob[keep].flatten().topk(min(max_instances, 2 * len(keep)))
    return keep[top.indices // 2], top.indices % 2, top.values


def select_target_query(
    logits: Tensor, boxes: Tensor, iou: Tensor, nms_iou: float = 0.7, max_instances: int = 100
) -> tuple[int, Tensor]:
    """The chosen query index and its score: the best instance labelled target (-1 when
    there is none, as upstream). logits (Q, T), boxes (Q, 4) cxcywh, iou (Q, 1)."""
    queries, labels, scores = ranked_instances(
        query_scores(logits, iou), boxes, nms_iou, max_instances
    )
    scores = torch.where(labels == 1, scores, torch.full_like(scores, -1.0))
    pick = int(scores.argmax())
    return int(queries[pick]), scores[pick]
