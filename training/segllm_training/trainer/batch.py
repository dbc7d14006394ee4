"""Conversations -> model tensors (``segllm_ros.model.batch.Batch``, the input of
``SegLLMModel.forward``), shared by every trainer and by evaluation.

A conversation is an image plus rounds (query, referenced earlier rounds, target mask). The
whole conversation is one LLM sequence (teacher forcing); every round's ``<seg>`` position is
decoded into a mask, the referenced rounds' ground-truth masks go in as reference input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from segllm_ros.model import transforms as T
from segllm_ros.model.batch import IGNORE_INDEX, Batch
from segllm_ros.model.template import tokenize_round


@dataclass
class SampleRound:
    query: str
    ref_rounds: list[int]  # 1-based earlier rounds referenced by this round
    mask: np.ndarray  # bool HxW target
    # Masks given in the user turn itself (MRSeg-hard's "[encode X] the other <class>"):
    # encoded after the referenced rounds' masks, exactly like them.
    input_masks: list[np.ndarray] = field(default_factory=list)
    # The answer's objects in reading order (multi-segment models: one per slot; ``mask`` is
    # their union); None = the one object ``mask`` (empty list: the answer is "not there").
    instances: list[np.ndarray] | None = None
    plural: bool = False  # the query asks for every match

    def slot_masks(self) -> list[np.ndarray]:
        if self.instances is None:
            return [self.mask] if self.mask.any() else []
        return self.instances

    def reference_masks(self, round_masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """The masks this round's reference input encodes, in order."""
        return [round_masks[k - 1] for k in self.ref_rounds] + [
            torch.from_numpy(m) for m in self.input_masks
        ]


@dataclass
class Sample:
    image: np.ndarray  # HxWx3 uint8 RGB
    rounds: list[SampleRound]
    mask_rounds: list[int] | None = None  # 0-based rounds with a mask loss (None = all)
    ref_keep: list[bool] | None = None  # reference-token dropout draw per reference, in
    #                                        sequence order (None = the model draws)


def collate(samples: list[Sample], model) -> Batch:
    """Token ids, labels and mask targets for a list of conversations (right-padded)."""
    tok, cfg = model.tokenizer, model.config
    size = cfg.sam.image_size
    seqs, labels, seg_batch, seg_pos, spans = [], [], [], [], []
    ref_masks, targets, dense, first, has_ref = [], [], [], [], []
    mask_weight: list[bool] = []
    n_slots = cfg.max_segments
    slot_targets, slot_present, plural = [], [], []
    for b, sample in enumerate(samples):
        hw = sample.image.shape[:2]
        masks = [torch.from_numpy(r.mask) for r in sample.rounds]
        ids: list[int] = []
        lab: list[int] = []
        refs_in_order: list[torch.Tensor] = []
        for i, rnd in enumerate(sample.rounds):
            earlier = rnd.reference_masks(masks)
            rt = tokenize_round(
                tok,
                cfg,
                rnd.query,
                cfg.seg_answer,
                len(earlier),
                first=i == 0,
                num_image_tokens=model.num_image_tokens,
            )
            offset = len(ids)
            seg_at = offset + len(rt.user_ids) + rt.answer_ids.index(model.seg_token_id)
            spans.append((offset + rt.query_span[0], offset + rt.query_span[1]))
            ids += rt.ids
            lab += [IGNORE_INDEX] * len(rt.user_ids) + rt.answer_ids
            seg_batch.append(b)
            seg_pos.append(seg_at)
            refs_in_order += earlier
            frame_masks = torch.stack([masks[i], *earlier]).float()
            in_space = T.resize_to_input_frame(frame_masks, hw, size) > 0.5
            targets.append(in_space[0])
            dense.append(in_space[1:].any(0) if earlier else torch.zeros(size, size, dtype=bool))
            first.append(in_space[1] if earlier else torch.zeros(size, size, dtype=bool))
            has_ref.append(bool(earlier))
            if n_slots > 1:
                objects = rnd.slot_masks()[:n_slots]
                slots = torch.zeros(n_slots, size, size, dtype=torch.bool)
                if objects:
                    stacked = torch.from_numpy(np.stack(objects)).float()
                    slots[: len(objects)] = T.resize_to_input_frame(stacked, hw, size) > 0.5
                slot_targets.append(slots)
                slot_present.append(torch.arange(n_slots) < len(objects))
                plural.append(rnd.plural)
            mask_weight.append(sample.mask_rounds is None or i in sample.mask_rounds)
        seqs.append(ids)
        labels.append(lab)
        ref_masks.append(
            torch.stack(refs_in_order) if refs_in_order else torch.zeros(0, *hw, dtype=torch.bool)
        )
    length = max(len(s) for s in seqs)
    pad = tok.pad_token_id
    input_ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    label_t = torch.full((len(seqs), length), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((len(seqs), length), dtype=torch.long)
    for b, (s, lab) in enumerate(zip(seqs, labels, strict=True)):
        input_ids[b, : len(s)] = torch.tensor(s)
        label_t[b, : len(lab)] = torch.tensor(lab)
        attn[b, : len(s)] = 1
    turn_pool = torch.zeros(len(spans), length)
    for r, (start, end) in enumerate(spans):
        turn_pool[r, start:end] = 1.0 / (end - start)
    images = [T.to_tensor(s.image) for s in samples]
    keep = None
    if all(s.ref_keep is not None for s in samples):
        keep = [torch.tensor(s.ref_keep, dtype=torch.bool) for s in samples]
    return Batch(
        images,
        input_ids,
        attn,
        label_t,
        torch.tensor(seg_batch),
        torch.tensor(seg_pos),
        turn_pool,
        ref_masks,
        torch.stack(targets).float(),
        torch.stack(dense).float(),
        torch.stack(first).float(),
        torch.tensor(has_ref),
        torch.tensor(mask_weight),
        keep,
        torch.stack(slot_targets).float() if slot_targets else None,
        torch.stack(slot_present) if slot_present else None,
        torch.tensor(plural) if plural else None,
    )
