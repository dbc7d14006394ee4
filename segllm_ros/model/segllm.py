"""SegLLM: a LLaVA-style LLM that emits ``<seg>`` tokens decoded into masks by SAM, with the
masks of earlier rounds fed back into the LLM as tokens (mask-encoding scheme).

Components (one module each where they are more than a layer):
vision tower (HF ``CLIPVisionModel``) -> projector -> LLM (any HF causal LM) -> seg head ->
SAM prompt/mask decoder; the mask encoder reuses the vision tower on masked crops.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from segllm_ros.model import transforms as T
from segllm_ros.model.config import SegLLMConfig
from segllm_ros.model.sam import build_sam

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


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
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_slots * num_tokens * prompt_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h).view(h.shape[0], *self.shape)


@dataclass
class FrameFeatures:
    """Per-frame work that every round on that frame reuses."""

    image: torch.Tensor          # (3, H, W) float 0..255, for mask-encoder crops
    image_tokens: torch.Tensor   # (N, llm_hidden)
    sam_embedding: torch.Tensor  # (1, C, h, w)

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[2])


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


def build_llm(spec: dict, tokenizer) -> nn.Module:
    """Any Hugging Face causal LM: from a config dict (sized to ``tokenizer`` unless the dict
    says otherwise) or ``{"pretrained": path, ...}`` (e.g. ``gguf_file``)."""
    spec = dict(spec)
    if "pretrained" in spec:
        path = spec.pop("pretrained")
        return AutoModelForCausalLM.from_pretrained(path, **spec)
    spec.setdefault("vocab_size", len(tokenizer))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        spec.setdefault(name, getattr(tokenizer, name))
    model_type = spec.pop("model_type", "llama")
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **spec))


def fill_placeholders(token_embeddings, input_ids: torch.Tensor,
                      image_tokens: torch.Tensor | None, ref_tokens: torch.Tensor | None,
                      image_token_id: int, ref_token_id: int) -> torch.Tensor:
    """Token embeddings (``token_embeddings(ids)``: the LLM's table or its exported graph)
    with the ``<image>`` and ``<ref>`` placeholders filled in order; shared by every runtime."""
    is_image = input_ids == image_token_id
    is_ref = input_ids == ref_token_id
    embeds = token_embeddings(input_ids.masked_fill(is_image | is_ref, 0))
    if is_image.any():
        embeds = embeds.masked_scatter(is_image[..., None], image_tokens.to(embeds.dtype))
    if is_ref.any():
        embeds = embeds.masked_scatter(is_ref[..., None], ref_tokens.to(embeds.dtype))
    return embeds


class SegLLMModel(nn.Module):
    def __init__(self, config: SegLLMConfig, tokenizer, llm: nn.Module | None = None,
                 vision_tower: CLIPVisionModel | None = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.vision_tower = vision_tower or CLIPVisionModel(CLIPVisionConfig(**config.vision))
        self.llm = llm if llm is not None else build_llm(config.llm, tokenizer)
        missing = [t for t in (config.image_token, config.seg_token, config.ref_token)
                   if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing},
                                         replace_extra_special_tokens=False)
        if self.llm.get_input_embeddings().num_embeddings < len(tokenizer):
            self.llm.resize_token_embeddings(len(tokenizer))
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
        self.seg_head = SegHead(hidden, prompt_dim, config.num_prompt_tokens,
                                2 if config.mask_aware_decoding else 1)
        self.sam = build_sam(config.sam)
        self.reference_embed = (nn.Parameter(torch.zeros(prompt_dim))
                                if config.dense_reference_prompt else None)
        self.turn_norm = nn.LayerNorm(hidden) if config.seg_turn_pooling else None
        self._match_embedding_scale()
        if config.freeze_vision_tower:
            self.vision_tower.requires_grad_(False)

    @torch.no_grad()
    def _match_embedding_scale(self) -> None:
        """Start the new input adapters (projectors, box encoder) at the scale of the LLM's
        token embeddings. With PyTorch's default init their outputs are ~20x larger than a
        freshly initialised LLM's word embeddings, which then drown the query text: the
        <seg> state stops depending on the query. Builders overwrite these with LLaVA's."""
        std = float(self.llm.get_input_embeddings().weight.std())
        for layer in (self.projector.linear_2, self.mask_projector.linear_2, self.box_encoder):
            layer.weight.normal_(0.0, std / max(1.0, layer.in_features ** 0.5) * 4)
            layer.bias.zero_()

    # ----------------------------------------------------------------- vision
    @property
    def dtype(self) -> torch.dtype:
        return self.box_encoder.weight.dtype

    @property
    def num_image_tokens(self) -> int:
        vc = self.vision_tower.config
        return (vc.image_size // vc.patch_size) ** 2

    def _vision_states(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.config.vision_feature_layer]

    def image_tokens(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """(B, 3, H, W) 0..255, or B images of any sizes -> (B, N, llm_hidden) projected
        patch tokens."""
        size = self.vision_tower.config.image_size
        return self.vision_tokens(T.clip_batch(images, size).to(self.dtype))

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP pixels (B, 3, S, S) -> (B, N, llm_hidden): the exported vision graph."""
        return self.projector(self._vision_states(pixels)[:, 1:])

    def sam_embedding(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """(B, 3, H, W) 0..255, or B images of any sizes -> (B, C, h, w) SAM image
        embeddings."""
        x = T.sam_batch(images, self.config.sam.image_size, self.sam.pixel_mean,
                        self.sam.pixel_std)
        return self.sam.image_encoder(x.to(self.dtype))

    @torch.no_grad()
    def encode_frame(self, image) -> FrameFeatures:
        """One camera frame (HxWx3 uint8) -> features reused by every round on it."""
        device = self.box_encoder.weight.device
        img = T.to_tensor(image).to(device)
        return FrameFeatures(img, self.image_tokens(img[None])[0], self.sam_embedding(img[None]))

    # -------------------------------------------------------- reference input
    def reference_tokens(self, image: torch.Tensor, masks: torch.Tensor,
                         keep: torch.Tensor | None = None) -> torch.Tensor:
        """Mask-encoding scheme: for each earlier mask (R, H, W) one mask token (CLIP CLS of
        the masked crop -> projector) and one box token. Returns (2R, hidden) interleaved
        [mask_1, box_1, mask_2, ...]. Dropped with p in training, scaled by 1-p otherwise;
        ``keep`` (R,) bool is the training draw when the caller makes it (the trainer does, so
        the draw depends on the sample, not on the process)."""
        if masks.shape[0] == 0:
            return torch.zeros(0, self.box_encoder.out_features, device=image.device)
        crops, boxes = T.reference_inputs(image, masks, self.vision_tower.config.image_size)
        tokens = self.encode_references(crops.to(self.dtype), boxes.to(self.dtype), keep)
        return tokens.reshape(-1, tokens.shape[-1])

    def encode_references(self, crops: torch.Tensor, boxes: torch.Tensor,
                          keep: torch.Tensor | None = None) -> torch.Tensor:
        """CLIP pixels of masked crops (R, 3, S, S) + boxes (R, 4) -> (R, 2, hidden) [mask
        token, box token]: the exported mask-encoder graph."""
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

    def embed(self, input_ids: torch.Tensor, image_tokens: torch.Tensor | None,
              ref_tokens: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with ``<image>`` and ``<ref>`` placeholders filled in order."""
        return fill_placeholders(self.llm.get_input_embeddings(), input_ids, image_tokens,
                                 ref_tokens, self.image_token_id, self.ref_token_id)

    # ------------------------------------------------------------------ LLM
    def llm_hidden(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   past_key_values=None, cache_position: torch.Tensor | None = None):
        """Last hidden states of the LLM (no LM head): what ``<seg>`` is read from.
        ``cache_position`` places the tokens in a static cache (padded feeds)."""
        return self.llm.get_decoder()(inputs_embeds=inputs_embeds,
                                      attention_mask=attention_mask,
                                      **{self.cache_kwarg: past_key_values}, use_cache=True,
                                      cache_position=cache_position)

    def seg_prompts(self, seg_hidden: torch.Tensor, turn_embeds: torch.Tensor) -> torch.Tensor:
        """SAM prompt tokens (R, slots, T, C) from the ``<seg>`` states (R, H) and the mean
        input embedding of each round's query tokens (R, H), used when ``seg_turn_pooling``
        is on."""
        if self.turn_norm is not None:
            seg_hidden = seg_hidden + self.turn_norm(turn_embeds)
        return self.seg_head(seg_hidden)

    # ----------------------------------------------------------------- SAM
    def dense_prompt(self, ref_masks: torch.Tensor | None, batch: int) -> torch.Tensor:
        """SAM dense prompt: "no mask" embedding, plus the learned reference embedding where
        the referenced earlier masks are (ref_masks: (B, S, S) in SAM input space, 0..1)."""
        pe = self.sam.prompt_encoder
        h = w = self.config.sam.embedding_size
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        if self.reference_embed is not None and ref_masks is not None:
            small = F.adaptive_avg_pool2d(ref_masks[:, None].to(dense.dtype), (h, w))
            dense = dense + small * self.reference_embed.view(1, -1, 1, 1)
        return dense

    def decode_masks(self, sam_embedding: torch.Tensor, prompts: torch.Tensor,
                     ref_masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One image embedding (1, C, h, w), R prompts (R, T, C) -> low-res mask logits
        (R, 1, 4h, 4w) and predicted IoU (R, 1)."""
        dense = self.dense_prompt(ref_masks, prompts.shape[0])
        return self.sam.mask_decoder(
            image_embeddings=sam_embedding,
            image_pe=self.sam.prompt_encoder.get_dense_pe().to(self.dtype),
            sparse_prompt_embeddings=prompts,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )

    def decode_from_seg(self, sam_embedding: torch.Tensor, seg_hidden: torch.Tensor,
                        turn_embeds: torch.Tensor, ref_masks: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference from one ``<seg>`` state (1, H) to the target slot's low-res mask logits
        and IoU: seg head + SAM prompt/mask decoder (the exported mask-decoder graph)."""
        prompts = self.seg_prompts(seg_hidden, turn_embeds)[:, 0]
        return self.decode_masks(sam_embedding, prompts, ref_masks)

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
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{directory} is not a SegLLM checkpoint: no {CONFIG_NAME}")
        config = SegLLMConfig.load(directory / CONFIG_NAME)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = cls(config, tokenizer)
        load_model(model, str(directory / WEIGHTS_NAME), device=device)
        return model.to(device).eval()

    @classmethod
    def grown_from(cls, directory: str | Path, config: SegLLMConfig) -> SegLLMModel:
        """The checkpoint in ``directory`` with more CNN context blocks (``config``), which
        start as the identity: the grown model computes exactly what the checkpoint did, and
        training goes on from there instead of from scratch. Any other difference is an
        error."""
        directory = Path(directory)
        old = SegLLMConfig.load(directory / CONFIG_NAME)
        # llm/vision as saved are complete HF dicts; their shapes are checked by the load below
        rest = replace(config, llm=old.llm, vision=old.vision,
                       sam=replace(config.sam, cnn_context_layers=old.sam.cnn_context_layers))
        if rest != old:
            raise ValueError(f"{directory}: a checkpoint can only grow CNN context blocks; "
                             "the rest of the config must match it")
        if config.sam.cnn_context_layers < old.sam.cnn_context_layers:
            raise ValueError(f"{directory} has {old.sam.cnn_context_layers} context blocks, "
                             f"the config asks for fewer ({config.sam.cnn_context_layers})")
        model = cls(config, AutoTokenizer.from_pretrained(directory))
        missing, unexpected = load_model(model, str(directory / WEIGHTS_NAME), strict=False)
        new = {f"sam.image_encoder.context.{i}."
               for i in range(old.sam.cnn_context_layers, config.sam.cnn_context_layers)}
        stray = [k for k in missing if not k.startswith(tuple(new))] + unexpected
        if stray:
            raise ValueError(f"{directory}: weights do not match the config: {stray[:5]}")
        return model.eval()
