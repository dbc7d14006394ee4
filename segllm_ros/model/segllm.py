"""SegLLM: a LLaVA-style LLM that emits ``<seg>`` tokens decoded into masks by SAM, with the
masks of earlier rounds fed back into the LLM as tokens (mask-encoding scheme).

Components (one module each where they are more than a layer):
vision tower (HF ``CLIPVisionModel``) -> projector -> LLM (any HF causal LM) -> seg head ->
SAM prompt/mask decoder; the mask encoder reuses the vision tower on masked crops.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_model
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from segllm_ros.model import processing as P
from segllm_ros.model import template
from segllm_ros.model.batch import IGNORE_INDEX, Batch
from segllm_ros.model.config import SegLLMConfig
from segllm_ros.model.family import CONFIG_NAME, DEFAULT_FAMILY
from segllm_ros.model.losses import LossWeights, add_losses
from segllm_ros.model.outputs import SegLLMOutput
from segllm_ros.model.sam import build_sam
from segllm_ros.model.tokenizer import build_word_tokenizer

WEIGHTS_NAME = "model.safetensors"
MAX_SEGMENTS = 4
"""Instance slots an answer can have: the mask tokens of SAM's decoder (1 + 3 multimask)."""


class Projector(nn.Module):
    """LLaVA-1.5's two-layer MLP; parameter names match ``multi_modal_projector``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class SegHead(nn.Module):
    """Hidden state of ``<seg>`` -> SAM sparse prompt tokens for each slot
    (slot 0 = target, slot 1 = the referenced object, for mask-aware decoding)."""

    def __init__(self, hidden: int, prompt_dim: int, num_tokens: int, num_slots: int) -> None:
        super().__init__()
        self.shape = (num_slots, num_tokens, prompt_dim)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_slots * num_tokens * prompt_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h).view(h.shape[0], *self.shape)


def architecture_dict(config, keep_model_type: bool = False) -> dict:
    """A Hugging Face config as the plain architecture dict ``SegLLMConfig`` stores: no
    provenance keys, no quantisation of the file it was read from (weights are saved
    dequantised); ``model_type`` kept where the class must be chosen from it (the LLM)."""
    data = config.to_diff_dict()
    for key in ("architectures", "transformers_version", "quantization_config"):
        data.pop(key, None)
    if not keep_model_type:
        data.pop("model_type", None)
    return data


PRETRAINED_KWARGS = ("gguf_file", "subfolder", "dtype", "attn_implementation")
"""The only ``llm`` keys passed on to ``from_pretrained`` besides the path: a checkpoint is
data, so nothing in it may switch on ``trust_remote_code`` (Python from the folder)."""


def build_llm(spec: dict, tokenizer) -> nn.Module:
    """Any Hugging Face causal LM: from a config dict (sized to ``tokenizer`` unless the dict
    says otherwise) or ``{"pretrained": path, ...}`` (``PRETRAINED_KWARGS``, e.g.
    ``gguf_file``). Never runs code shipped with a checkpoint."""
    spec = dict(spec)
    if "trust_remote_code" in spec:
        raise ValueError(
            "config.llm sets trust_remote_code: a checkpoint cannot run code; "
            "only transformers' own model classes load"
        )
    if "pretrained" in spec:
        path = spec.pop("pretrained")
        refused = sorted(set(spec) - set(PRETRAINED_KWARGS))
        if refused:
            raise ValueError(
                f"config.llm keys {refused} are not passed to from_pretrained; "
                f"allowed: {list(PRETRAINED_KWARGS)}"
            )
        return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, **spec)
    spec.setdefault("vocab_size", len(tokenizer))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        spec.setdefault(name, getattr(tokenizer, name))
    model_type = spec.pop("model_type", "llama")
    return AutoModelForCausalLM.from_config(
        AutoConfig.for_model(model_type, **spec), trust_remote_code=False
    )


def add_special_tokens(tokenizer, config: SegLLMConfig) -> None:
    """Add the ``<image>``, ``<seg>`` and ``<ref>`` tokens ``tokenizer`` lacks (in place)."""
    missing = [
        t
        for t in (config.image_token, config.seg_token, config.ref_token)
        if t not in tokenizer.get_vocab()
    ]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )


class SegLLMModel(nn.Module):
    """The parts of a SegLLM, assembled. Methods other than ``forward`` and persistence are
    the exported graphs (``segllm_ros.export.graphs``), one each; what runs around them is in
    ``processing``, shared with every runtime. Build a new model with ``build``."""

    family = DEFAULT_FAMILY
    processing = P  # the family's pre/post-processing and prompt format (runtime.base.Runtime)
    template = template

    def __init__(
        self, config: SegLLMConfig, tokenizer, llm: nn.Module, vision_tower: CLIPVisionModel
    ) -> None:
        """Assemble as given: ``tokenizer`` holds the special tokens and ``llm``'s embedding
        table covers it (``build`` sees to both); the new parts get PyTorch's default init."""
        super().__init__()
        if not 1 <= config.max_segments <= MAX_SEGMENTS:
            raise ValueError(
                f"max_segments must be 1..{MAX_SEGMENTS} (SAM's mask tokens), "
                f"got {config.max_segments}"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.vision_tower = vision_tower
        self.llm = llm
        # transformers 5.x names the KV cache argument ``cache``; 4.x ``past_key_values``.
        params = inspect.signature(self.llm.get_decoder().forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.image_token_id = tokenizer.convert_tokens_to_ids(config.image_token)
        self.seg_token_id = tokenizer.convert_tokens_to_ids(config.seg_token)
        self.ref_token_id = tokenizer.convert_tokens_to_ids(config.ref_token)

        vision_dim = self.vision_tower.config.hidden_size
        hidden = self.llm.get_input_embeddings().embedding_dim
        prompt_dim = config.sam.prompt_embed_dim
        self.projector = Projector(vision_dim, hidden)
        self.mask_projector = Projector(vision_dim, hidden)
        self.box_encoder = nn.Linear(4, hidden)
        self.seg_head = SegHead(
            hidden, prompt_dim, config.num_prompt_tokens, 2 if config.mask_aware_decoding else 1
        )
        self.sam = build_sam(config.sam)
        self.reference_embed = (
            nn.Parameter(torch.zeros(prompt_dim)) if config.dense_reference_prompt else None
        )
        self.turn_norm = nn.LayerNorm(hidden) if config.seg_turn_pooling else None
        # Whether the query asks for every match (plural) or one object; with the slots'
        # presence it decides the answer kind (segllm_ros.engine.answers.answer_kind).
        self.plural_head = nn.Linear(hidden, 1) if config.max_segments > 1 else None

    @classmethod
    def build(
        cls,
        config: SegLLMConfig,
        tokenizer,
        llm: nn.Module | None = None,
        vision_tower: CLIPVisionModel | None = None,
    ) -> SegLLMModel:
        """A new model: the LLM and vision tower from ``config`` unless given, the special
        tokens added to ``tokenizer`` (in place) and the LLM's embeddings grown to match, the
        new input adapters scaled to the LLM's embeddings, the vision tower frozen when the
        config says so."""
        vision_tower = vision_tower or CLIPVisionModel(CLIPVisionConfig(**config.vision))
        llm = llm if llm is not None else build_llm(config.llm, tokenizer)
        add_special_tokens(tokenizer, config)
        if llm.get_input_embeddings().num_embeddings < len(tokenizer):
            llm.resize_token_embeddings(len(tokenizer))
        model = cls(config, tokenizer, llm, vision_tower)
        model._match_embedding_scale()
        if config.freeze_vision_tower:
            model.vision_tower.requires_grad_(False)
        return model

    @torch.no_grad()
    def _match_embedding_scale(self) -> None:
        """Start the new input adapters (projectors, box encoder) at the scale of the LLM's
        token embeddings. With PyTorch's default init their outputs are ~20x larger than a
        freshly initialised LLM's word embeddings, which then drown the query text: the
        <seg> state stops depending on the query. Builders overwrite these with LLaVA's."""
        std = float(self.llm.get_input_embeddings().weight.std())
        for layer in (self.projector.linear_2, self.mask_projector.linear_2, self.box_encoder):
            layer.weight.normal_(0.0, std / max(1.0, layer.in_features**0.5) * 4)
            layer.bias.zero_()

    # ------------------------------------------------------------- properties
    @property
    def dtype(self) -> torch.dtype:
        return self.box_encoder.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.box_encoder.weight.device

    @property
    def num_image_tokens(self) -> int:
        vc = self.vision_tower.config
        return (vc.image_size // vc.patch_size) ** 2

    @property
    def clip_size(self) -> int:
        return self.vision_tower.config.image_size

    @property
    def hidden_size(self) -> int:
        return self.box_encoder.out_features

    # ----------------------------------------------------------- forward pass
    def forward(self, batch: Batch, loss_weights: LossWeights | None = None) -> SegLLMOutput:
        """One teacher-forced pass over whole conversations: the LM logits, every round's
        ``<seg>`` state and SAM prompts, and the masks of the rounds in ``batch.mask_weight``
        (upstream: k random rounds), plus the referenced object's when mask-aware decoding is
        on and ``loss_weights.reference`` > 0. With targets in ``batch``, the losses too."""
        w = loss_weights or LossWeights()
        images = P.image_tokens(self, batch.images)
        keeps = batch.ref_keep if batch.ref_keep is not None else [None] * len(batch.ref_masks)
        ref_tokens = torch.cat(
            [
                P.reference_tokens(self, img, refs, keep)
                for img, refs, keep in zip(batch.images, batch.ref_masks, keeps, strict=True)
            ]
        )
        embeds = P.embed(self, batch.input_ids, images.flatten(0, 1), ref_tokens)
        hidden = self.llm_hidden(embeds, batch.attention_mask).last_hidden_state
        logits = self.lm_head(hidden[:, :-1])
        losses = {}
        if batch.labels is not None:
            losses["text"] = F.cross_entropy(
                logits.flatten(0, 1), batch.labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
        turn_mean = torch.einsum("rl,rlh->rh", batch.turn_pool, embeds[batch.seg_batch])
        seg_hidden = hidden[batch.seg_batch, batch.seg_pos]
        features = self._seg_features(seg_hidden, turn_mean)
        prompts = self.seg_head(features)
        rounds, low, slots, ious, ref_rounds, ref_masks = self._decode_rounds(
            batch, prompts, P.sam_embedding(self, batch.images), decode_references=w.reference > 0
        )
        plural = None if self.plural_head is None else self.plural_head(features[rounds])[:, 0]
        out = SegLLMOutput(
            logits,
            seg_hidden,
            prompts,
            rounds,
            low[:, :1],
            slots[:, 0],
            ious[:, 0],
            ref_rounds,
            ref_masks,
            slots,
            ious,
            plural,
            losses=losses,
        )
        if batch.labels is not None and batch.targets is not None:
            add_losses(out, batch, w)
        return out

    def _decode_rounds(
        self, batch: Batch, prompts: torch.Tensor, sam_emb: torch.Tensor, decode_references: bool
    ) -> tuple:
        """SAM on each image's decoded rounds (and their references): decoded rounds, low-res
        slot logits, slot logits at SAM's input size, slot IoUs (all in round order) and the
        referenced objects' rounds and masks (slot 0)."""
        size = self.config.sam.image_size
        rounds, low_res, masks, ious, ref_rounds, ref_masks = [], [], [], [], [], []
        for b in range(len(batch.images)):
            idx = ((batch.seg_batch == b) & batch.mask_weight).nonzero().flatten()
            if idx.numel() == 0:
                continue
            dense = batch.dense_ref[idx]
            slots = [prompts[idx, 0]]
            with_ref = idx[batch.has_ref[idx]]
            if decode_references and self.config.mask_aware_decoding and with_ref.numel():
                slots.append(prompts[with_ref, 1])
                dense = torch.cat([dense, batch.dense_ref[with_ref]])
            low, iou = self._decode_masks(sam_emb[b : b + 1], torch.cat(slots), dense)
            up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
            rounds.append(idx)
            low_res.append(low[: idx.numel()])
            masks.append(up[: idx.numel()])
            ious.append(iou[: idx.numel()])
            if len(slots) > 1:
                ref_rounds.append(with_ref)
                ref_masks.append(up[idx.numel() :, 0])
        return (
            torch.cat(rounds),
            torch.cat(low_res),
            torch.cat(masks),
            torch.cat(ious),
            torch.cat(ref_rounds) if ref_rounds else None,
            torch.cat(ref_masks) if ref_masks else None,
        )

    # --------------------------------------------- exported graphs, one each
    def _vision_states(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.config.vision_feature_layer]

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP pixels (B, 3, S, S) -> (B, N, llm_hidden) projected patch tokens."""
        return self.projector(self._vision_states(pixels)[:, 1:])

    def sam_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        """SAM pixels (B, 3, S, S) -> (B, C, h, w) SAM image embeddings."""
        return self.sam.image_encoder(pixels)

    def encode_references(
        self, crops: torch.Tensor, boxes: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CLIP pixels of masked crops (R, 3, S, S) + boxes (R, 4) -> (R, 2, hidden) [mask
        token, box token]. Dropped with p in training, scaled by 1-p otherwise; ``keep`` (R,)
        bool is the training draw when the caller makes it (the trainer does, so the draw
        depends on the sample, not on the process)."""
        mask_tok = self.mask_projector(self._vision_states(crops)[:, 0])
        tokens = torch.stack([mask_tok, self.box_encoder(boxes)], dim=1)
        p = self.config.reference_token_dropout
        if self.training and p > 0:
            if keep is None:
                keep = torch.rand(tokens.shape[0], device=tokens.device) >= p
            tokens = tokens * keep.view(-1, 1, 1).to(tokens.device, tokens.dtype)
        elif p > 0:
            tokens = tokens * (1.0 - p)
        return tokens

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> the LLM's input embeddings (B, L, hidden)."""
        return self.llm.get_input_embeddings()(input_ids)

    def llm_hidden(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        cache_position: torch.Tensor | None = None,
    ):
        """Last hidden states of the LLM (no LM head): what ``<seg>`` is read from.
        ``cache_position`` places the tokens in a static cache (padded feeds)."""
        return self.llm.get_decoder()(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            **{self.cache_kwarg: past_key_values},
            use_cache=True,
            cache_position=cache_position,
        )

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., hidden) -> next-token logits (..., vocab)."""
        return self.llm.get_output_embeddings()(hidden)

    def decode_from_seg(
        self,
        sam_embedding: torch.Tensor,
        seg_hidden: torch.Tensor,
        turn_embeds: torch.Tensor,
        ref_masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference from one ``<seg>`` state (1, H): seg head + SAM prompt/mask decoder ->
        the instance slots' low-res mask logits (1, N, s, s), their IoU = presence (1, N),
        and the plural logit (1, 1) (0 for a single-slot model: singular)."""
        features = self._seg_features(seg_hidden, turn_embeds)
        low, iou = self._decode_masks(sam_embedding, self.seg_head(features)[:, 0], ref_masks)
        if self.plural_head is None:
            return low, iou, torch.zeros_like(iou[:, :1])
        return low, iou, self.plural_head(features)

    # -------------------------------------------------- parts of the graphs
    def _seg_features(self, seg_hidden: torch.Tensor, turn_embeds: torch.Tensor) -> torch.Tensor:
        """What the seg and plural heads read (R, H): the ``<seg>`` states plus, when
        ``seg_turn_pooling`` is on, the mean input embedding of each round's query tokens."""
        if self.turn_norm is not None:
            seg_hidden = seg_hidden + self.turn_norm(turn_embeds)
        return seg_hidden

    def _dense_prompt(self, ref_masks: torch.Tensor | None, batch: int) -> torch.Tensor:
        """SAM dense prompt: "no mask" embedding, plus the learned reference embedding where
        the referenced earlier masks are (ref_masks: (B, S, S) in SAM input space, 0..1)."""
        pe = self.sam.prompt_encoder
        h = w = self.config.sam.embedding_size
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        if self.reference_embed is not None and ref_masks is not None:
            small = F.adaptive_avg_pool2d(ref_masks[:, None].to(dense.dtype), (h, w))
            dense = dense + small * self.reference_embed.view(1, -1, 1, 1)
        return dense

    def _decode_masks(
        self, sam_embedding: torch.Tensor, prompts: torch.Tensor, ref_masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image embedding (1, C, h, w), R prompts (R, T, C) -> low-res mask logits of
        the first ``max_segments`` mask tokens (R, N, 4h, 4w) and their predicted IoU (R, N).
        With N = 1 this is SAM's single-mask output."""
        dense = self._dense_prompt(ref_masks, prompts.shape[0])
        masks, iou = self.sam.mask_decoder.predict_masks(
            image_embeddings=sam_embedding,
            image_pe=self.sam.prompt_encoder.get_dense_pe().to(self.dtype),
            sparse_prompt_embeddings=prompts,
            dense_prompt_embeddings=dense,
        )
        n = self.config.max_segments
        return masks[:, :n], iou[:, :n]

    def to_precision(self, dtype: torch.dtype) -> SegLLMModel:
        """Cast weights to ``dtype``; SAM's random-Fourier positional encoding stays fp32
        (segment-anything builds its coordinate grid in fp32)."""
        self.to(dtype)
        self.sam.prompt_encoder.pe_layer.float()
        return self

    # ------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> None:
        """safetensors weights + JSON config + tokenizer; the LLM's own config is written
        into ``config.llm`` so loading needs no outside files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = SegLLMConfig.from_dict(self.config.to_dict())
        cfg.llm = architecture_dict(self.llm.config, keep_model_type=True)
        cfg.vision = architecture_dict(self.vision_tower.config)
        cfg.save(directory / CONFIG_NAME)
        save_model(self, str(directory / WEIGHTS_NAME))
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> SegLLMModel:
        """The checkpoint ``save_pretrained`` wrote, in eval mode on ``device``."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{directory} is not a SegLLM checkpoint: no {CONFIG_NAME}")
        config = SegLLMConfig.load(directory / CONFIG_NAME)
        if config.family != cls.family:
            raise ValueError(
                f"{directory} holds a {config.family!r} model, not {cls.family!r}; "
                "load it with segllm_ros.model.family.load_pretrained"
            )
        model = cls.build(config, AutoTokenizer.from_pretrained(directory, trust_remote_code=False))
        load_model(model, str(directory / WEIGHTS_NAME), device=device)
        return model.to(device).eval()

    @classmethod
    def grown_from(
        cls, directory: str | Path, config: SegLLMConfig, vocabulary: Iterable[str] = ()
    ) -> SegLLMModel:
        """The checkpoint in ``directory`` grown, so training goes on from it instead of
        from scratch: more CNN context blocks (they start as the identity), more instance
        slots (SAM's mask tokens are in every checkpoint; the plural head starts at zero:
        singular), and the words of ``vocabulary`` a word tokenizer lacks (their embeddings
        start at the mean of the known ones; known words keep theirs). For every input the
        checkpoint could take, the grown model's first slot computes what it did. Any other
        difference is an error."""
        directory = Path(directory)
        old = SegLLMConfig.load(directory / CONFIG_NAME)
        # llm/vision as saved are complete HF dicts; their shapes are checked by the load below
        rest = replace(
            config,
            llm=old.llm,
            vision=old.vision,
            sam=replace(config.sam, cnn_context_layers=old.sam.cnn_context_layers),
            max_segments=old.max_segments,
        )
        if rest != old:
            raise ValueError(
                f"{directory}: a checkpoint can only grow CNN context blocks, instance slots "
                "and words; the rest of the config must match it"
            )
        for key, new, was in (
            ("context blocks", config.sam.cnn_context_layers, old.sam.cnn_context_layers),
            ("instance slots", config.max_segments, old.max_segments),
        ):
            if new < was:
                raise ValueError(f"{directory} has {was} {key}, the config asks for fewer ({new})")
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
        known = tokenizer.get_vocab()
        new_words = sorted({w for w in vocabulary if w not in known})
        if new_words:
            tokenizer = build_word_tokenizer([*known, *new_words])
        model = cls.build(config, tokenizer)
        state = load_file(str(directory / WEIGHTS_NAME))
        if new_words:
            _remap_token_rows(state, known, tokenizer.get_vocab())
        missing, unexpected = model.load_state_dict(state, strict=False)
        new = (
            *(
                f"sam.image_encoder.context.{i}."
                for i in range(old.sam.cnn_context_layers, config.sam.cnn_context_layers)
            ),
            "plural_head.",
        )
        loaded = {id(p) for k, p in model.state_dict(keep_vars=True).items() if k in state}
        params = model.state_dict(keep_vars=True)
        stray = [
            k for k in missing if not k.startswith(new) and id(params[k]) not in loaded
        ] + unexpected
        if stray:
            raise ValueError(f"{directory}: weights do not match the config: {stray[:5]}")
        if model.plural_head is not None and "plural_head.weight" not in state:
            with torch.no_grad():
                model.plural_head.weight.zero_()
                model.plural_head.bias.zero_()
        return model.eval()


def _remap_token_rows(state: dict[str, torch.Tensor], old: dict[str, int], new: dict[str, int]):
    """Move the LLM's token-indexed tables (embeddings, LM head) of ``state`` from the
    ``old`` vocabulary's ids to the ``new`` one's (in place); new words get the mean row."""
    for name, table in list(state.items()):
        if not name.startswith("llm.") or not name.endswith(
            ("embed_tokens.weight", "lm_head.weight")
        ):
            continue
        grown = table.mean(0, keepdim=True).repeat(len(new), 1)
        for word, i in new.items():
            if word in old:
                grown[i] = table[old[word]]
        state[name] = grown
