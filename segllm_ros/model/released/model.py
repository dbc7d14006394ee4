"""The authors' released SegLLM (model family "segllm-hipie"): LLaVA-1.5-7B + HIPIE-R50.

Module tree (released key prefix -> ours):
    model.{embed_tokens,layers,norm}.*, lm_head.*   -> llm.*             LLaMA (transformers)
    model.vision_tower.vision_tower.vision_model.*  -> vision_tower.*    CLIP ViT (transformers 5)
    model.mm_projector.*                            -> mm_projector.*    mlp2x_gelu
    model.mask_enc_head.*                           -> mask_enc_head.*   box token, Linear(4->H)
    model.segmentator_predictor.*                   -> segmentator_predictor.*   H->H->8x768
    model.segmentator.hipie.*                       -> segmentator.*     HIPIE-R50

It duck-types what the engine and ``TorchRuntime`` use of ``SegLLMModel`` (same method names:
``vision_tokens``, ``sam_encoder`` = HIPIE's per-frame backbone, ``decode_from_seg`` = the
predictor + HIPIE + upstream's selection); ``processing`` and ``template`` are this family's.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaForCausalLM,
)
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from segllm_ros.model.hipie import HipieR50
from segllm_ros.model.released import processing, template
from segllm_ros.model.released.checkpoint import CheckpointSpec, KeyReport, TensorInfo, read_layout
from segllm_ros.model.released.config import FAMILY, ReleasedConfig
from segllm_ros.model.released.tokens import load_tokenizer

RENAMES = (
    ("llm.model.", "model."),
    ("llm.lm_head.", "lm_head."),
    ("vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("mm_projector.", "model.mm_projector."),
    ("mask_enc_head.", "model.mask_enc_head."),
    ("segmentator_predictor.", "model.segmentator_predictor."),
    ("segmentator.", "model.segmentator.hipie."),
)
"""Our state-dict prefix -> the released one (first match)."""
TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
IGNORED = (
    "model.segmentator.hipie.text_encoder.*",  # HIPIE's BERT: SegLLM feeds LLM tokens instead
    "model.segmentator.hipie.criterion.*",  # training losses' buffers
    "model.segmentator.hipie.detr.resizer.*",  # text-feature resizer, training only
    "model.layers.*.self_attn.rotary_emb.inv_freq",  # recomputed from the config
    "model.vision_tower.vision_tower.vision_model.embeddings.position_ids",
    "model.vision_tower.vision_tower.visual_projection.*",  # CLIP's joint-space head: unused
)
"""Stored tensors that inference never uses (older transformers also saved buffers)."""


def stores_tower(layout: Mapping[str, TensorInfo]) -> bool:
    """Whether a folder's weights (``read_layout``) hold the CLIP tower (upstream saves the
    full state)."""
    return any(k.startswith(TOWER_PREFIX) for k in layout)


def released_name(own: str) -> str:
    for ours, theirs in RENAMES:
        if own.startswith(ours):
            return theirs + own[len(ours) :]
    raise KeyError(f"{own} has no released name")


class ReleasedSegLLM(nn.Module):
    family = FAMILY
    processing = processing
    template = template

    def __init__(
        self, config: ReleasedConfig, tokenizer=None, llm: LlamaForCausalLM | None = None
    ) -> None:
        """The architecture of ``config`` with fresh weights (``from_pretrained`` loads them),
        around ``llm`` when given."""
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        hidden = config.hidden_size
        self.llm = llm if llm is not None else LlamaForCausalLM(config.llama_config())
        self.vision_tower = CLIPVisionModel(CLIPVisionConfig(**config.vision))
        width = self.vision_tower.config.hidden_size
        self.mm_projector = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.mask_enc_head = nn.Linear(4, hidden)
        self.segmentator_predictor = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, config.segmentator_dim)
        )
        self.segmentator = HipieR50(config.hipie)
        # transformers 5.x names the KV cache argument ``cache``; 4.x ``past_key_values``.
        params = inspect.signature(self.llm.model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------- properties
    @property
    def dtype(self) -> torch.dtype:
        return self.mask_enc_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.mask_enc_head.weight.device

    @property
    def num_image_tokens(self) -> int:
        vc = self.vision_tower.config
        return (vc.image_size // vc.patch_size) ** 2

    @property
    def clip_size(self) -> int:
        return self.vision_tower.config.image_size

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def segmentator_dtype(self) -> torch.dtype:
        return next(self.segmentator.parameters()).dtype

    @property
    def image_token_id(self) -> int:
        """The ``<video>`` placeholder (image and references alike)."""
        return self.tokenizer.convert_tokens_to_ids(self.config.image_token)

    ref_token_id = image_token_id

    # ------------------------------------------------------------------ graphs
    def _clip_states(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.config.vision_feature_layer]

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP pixels (B, 3, S, S) -> projected patch tokens (B, N, hidden)."""
        return self.mm_projector(self._clip_states(pixels)[:, 1:])

    def sam_encoder(self, frame: np.ndarray | torch.Tensor) -> list[torch.Tensor]:
        """HxWx3 uint8 frame -> HIPIE's backbone levels (per frame; cached by the engine)."""
        pixels, _ = self.segmentator.preprocess(frame)
        return self.segmentator.image_features(pixels.to(self.segmentator_dtype))

    def encode_references(
        self, crops: torch.Tensor, boxes: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Masked-crop CLIP pixels (R, 3, S, S) + boxes (R, 4) -> (R, 2, hidden) [mask, box]
        tokens: the crop's CLS through the projector, the box through ``mask_enc_head``, both
        scaled as upstream does at inference. ``keep`` (training dropout) is not supported."""
        if keep is not None:
            raise ValueError("the released family runs inference only")
        mask = self.mm_projector(self._clip_states(crops)[:, 0])
        tokens = torch.stack([mask, self.mask_enc_head(boxes)], 1)
        return tokens * self.config.reference_scale

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(input_ids)

    def llm_hidden(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        cache_position: torch.Tensor | None = None,
    ):
        """Last hidden states of the LLaMA decoder (no LM head)."""
        return self.llm.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            **{self.cache_kwarg: past_key_values},
            use_cache=True,
            cache_position=cache_position,
        )

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.llm.lm_head(hidden)

    def decode_from_seg(
        self,
        features: list[torch.Tensor],
        seg_hidden: torch.Tensor,
        turn_embeds: torch.Tensor | None = None,
        ref_masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One ``<seg>`` state (1, hidden) -> 8 HIPIE text tokens -> HIPIE -> upstream's
        selected instance: mask logits (1, 1, s, s) over the padded input, its score (1, 1)
        (-1, with an empty mask: no instance was labelled "target"), plural logit 0 (one
        object per answer). Upstream HIPIE reads no turn pooling and no referenced masks:
        both are ignored."""
        c = self.config.hipie
        text = self.segmentator_predictor(seg_hidden).view(-1, c.text_tokens, c.text_dim)
        text = text.to(self.segmentator_dtype)
        mask, score = self.segmentator.select_target(self.segmentator(features, text))
        score = score.reshape(1, 1).to(mask.dtype)
        return mask, score, torch.zeros_like(score)

    def to_precision(self, dtype: torch.dtype) -> ReleasedSegLLM:
        """Cast to ``dtype``, HIPIE excepted: it runs in float32 (as upstream's encoder and
        decoder do; 57M parameters)."""
        self.to(dtype)
        self.segmentator.float()
        return self

    # ------------------------------------------------------------ checkpoint
    def checkpoint_names(self) -> dict[str, str]:
        """Released name -> our state-dict name, for every tensor we hold (both names of a
        shared module included)."""
        return {released_name(k): k for k in self.state_dict(keep_vars=True)}

    def aliases(self) -> tuple[tuple[str, str], ...]:
        """Released name pairs that are one tensor here (modules HIPIE shares)."""
        first: dict[int, str] = {}
        pairs = []
        for name, tensor in self.state_dict(keep_vars=True).items():
            if id(tensor) in first:
                pairs.append((released_name(first[id(tensor)]), released_name(name)))
            else:
                first[id(tensor)] = name
        return tuple(pairs)

    def checkpoint_spec(self, tower_stored: bool = True) -> CheckpointSpec:
        """What this model needs from a released folder; without ``tower_stored`` the CLIP
        weights come from the tower's own folder (stored copies then count as ignored)."""
        names = self.checkpoint_names()
        shapes = self.state_dict(keep_vars=True)
        ignore = IGNORED
        if not tower_stored:
            names = {k: v for k, v in names.items() if not k.startswith(TOWER_PREFIX)}
            ignore = (*IGNORED, TOWER_PREFIX + "*")
        return CheckpointSpec(
            {k: tuple(shapes[v].shape) for k, v in names.items()},
            names,
            ignore,
            tuple(p for p in self.aliases() if p[0] in names),
        )

    @classmethod
    def meta(cls, config: ReleasedConfig) -> ReleasedSegLLM:
        """The architecture without weights (a dry run: names and shapes only)."""
        with torch.device("meta"):
            return cls(config)

    @classmethod
    def dry_run(cls, directory: str | Path, vision_tower: str | None = None) -> KeyReport:
        """What loading ``directory`` would find, from its config, index and headers only."""
        config = ReleasedConfig.load(directory, vision_tower)
        layout = read_layout(directory)
        return cls.meta(config).checkpoint_spec(stores_tower(layout)).check(directory, layout)

    @classmethod
    def load_segmentator(cls, directory: str | Path) -> HipieR50:
        """HIPIE alone, in float32, reading only its tensors (for exporting the decoder)."""
        config = ReleasedConfig.load(directory)
        layout = read_layout(directory)
        spec = cls.meta(config).checkpoint_spec(stores_tower(layout)).subset("segmentator.")
        model = HipieR50(config.hipie)
        model.load_state_dict(spec.load(directory, torch.float32, layout))
        return model.eval()

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str = "cpu", vision_tower: str | None = None
    ) -> ReleasedSegLLM:
        """A released folder (config.json with model_type "llava", tokenizer, weights) in
        eval mode on ``device``, in the stored dtype. The CLIP tower comes from the weights
        when they hold it, else from ``vision_tower`` (or the config's ``mm_vision_tower``)
        as a local Hugging Face folder. The LLM is built without memory (meta) and takes the
        stored tensors as they are, so a 7B model is held once."""
        directory = Path(directory)
        config = ReleasedConfig.load(directory, vision_tower)
        tokenizer = load_tokenizer(directory, config.llama_config())
        layout = read_layout(directory)
        tower_stored = stores_tower(layout)
        with torch.device("meta"):
            llm = LlamaForCausalLM(config.llama_config())
        model = cls(config, tokenizer, llm)
        state = model.checkpoint_spec(tower_stored).load(directory, layout=layout)
        if not tower_stored:  # in the stored weights' dtype, like the rest
            dtype = state["llm.lm_head.weight"].dtype
            tower = CLIPVisionModel.from_pretrained(config.vision_tower).state_dict()
            state.update({f"vision_tower.{k}": v.to(dtype) for k, v in tower.items()})
        model.load_state_dict(state, strict=False, assign=True)
        llm.model.rotary_emb = LlamaRotaryEmbedding(config=llm.config)  # a buffer, not stored
        left = [n for n, t in model.state_dict().items() if t.is_meta]
        if left:
            raise ValueError(f"{directory}: tensors not loaded: {left[:5]}")
        return model.to_precision(state["llm.lm_head.weight"].dtype).to(device).eval()
