"""The authors' released SegLLM as this project describes it: one dataclass read from the
release's own ``config.json``.

That file says ``model_type: "llava"`` and holds LLaMA's sizes plus LLaVA's ``mm_*`` keys; it
is parsed here, field by field, never through ``AutoConfig`` (transformers' own LLaVA is
another architecture under the same name). It does not describe the CLIP tower (only its
Hugging Face id) nor HIPIE (a fixed R50 build): their architectures come from the tower's
folder when it is local, else from the known ViT-L/14-224, and from ``HipieConfig``'s
defaults. A folder may add a ``"segllm_ros"`` key with ``{"hipie": {...}}`` to override HIPIE's
sizes (the tiny test folders; the release has none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import LlamaConfig

from segllm_ros.model.hipie import HipieConfig

FAMILY = "segllm-hipie"
RELEASED_MODEL_TYPE = "llava"

ADDED_TOKENS = (
    "<im_gen_start>",
    "<im_gen>",
    "<mask_gen>",
    "<audio_gen>",
    "<audio_gen_start>",
    "<audio>",
    "<video>",
    "<base>",
    "<base_null>",
    "<seg>",
    "<seg_input>",
)
"""The tokens upstream adds to Vicuna's 32000, in its order (ids 32000..32010)."""

LLAMA_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
    "vocab_size",
    "hidden_act",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)
"""The LLaMA architecture keys taken from the release's config (the rest is provenance or
training state)."""

CLIP_VIT_L14_224 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
"""``openai/clip-vit-large-patch14``'s vision config: the tower every release names."""
KNOWN_TOWERS = {"openai/clip-vit-large-patch14": CLIP_VIT_L14_224}
RELEASED_7B = {
    "model_type": RELEASED_MODEL_TYPE,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "vocab_size": 32011,
    "mm_vision_tower": "openai/clip-vit-large-patch14",
    "mm_hidden_size": 1024,
    "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "mm_use_bbox_encode": True,
    "segmentator": "hipie",
}
"""The released checkpoints' architecture as their config.json states it (the fields read
here): builds the full-size model without the folder (meta dry runs, the GPU benchmark)."""


@dataclass
class ReleasedConfig:
    """The released model: LLaMA (``llm``), CLIP tower (``vision_tower`` id or folder and its
    architecture ``vision``), projector, reference-token heads, HIPIE, and the prompt format.
    Attribute names the engine reads (``image_token``, ``seg_answer``, ...) match
    ``SegLLMConfig``'s."""

    llm: dict[str, Any]
    vision_tower: str
    vision: dict[str, Any]
    hipie: HipieConfig = field(default_factory=HipieConfig)
    family: str = FAMILY
    vision_feature_layer: int = -2
    # Upstream scales the mask and box tokens by this at inference (0.5 dropout in training).
    reference_scale: float = 0.5
    system_prompt: str = (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    )
    seg_answer: str = "<seg>"
    # One placeholder token for image and reference features, which are *added* to its
    # embedding (upstream's ``<video>``).
    image_token: str = "<video>"
    ref_token: str = "<video>"
    seg_token: str = "<seg>"

    @property
    def hidden_size(self) -> int:
        return int(self.llm["hidden_size"])

    def llama_config(self) -> LlamaConfig:
        return LlamaConfig(**{k: v for k, v in self.llm.items() if k != "model_type"})

    @property
    def segmentator_dim(self) -> int:
        """Width of the predictor's output: HIPIE's text tokens, flattened (8 x 768)."""
        return self.hipie.text_tokens * self.hipie.text_dim

    @classmethod
    def from_released(cls, data: dict[str, Any], vision_tower: str | None = None) -> ReleasedConfig:
        """Parse a release's ``config.json`` content; ``vision_tower`` overrides its
        ``mm_vision_tower`` (a local CLIP folder, e.g. when the weights lack the tower)."""
        if data.get("model_type") != RELEASED_MODEL_TYPE:
            raise ValueError(
                f"not a released SegLLM config: model_type {data.get('model_type')!r}, "
                f"expected {RELEASED_MODEL_TYPE!r}"
            )
        for key, want in (
            ("mm_projector_type", "mlp2x_gelu"),
            ("mm_vision_select_feature", "patch"),
            ("mm_use_bbox_encode", True),
        ):
            if data.get(key, want) != want:
                raise ValueError(f"unsupported release: {key}={data[key]!r} (only {want!r})")
        if str(data.get("segmentator", "hipie")).replace("0", "") != "hipie":
            raise ValueError(f"unsupported segmentator {data['segmentator']!r}: only HIPIE-R50")
        if data.get("rope_scaling"):
            raise ValueError("unsupported release: rope_scaling is set (Vicuna-7B-v1.5 has none)")
        tower = vision_tower or data.get("mm_vision_tower") or "openai/clip-vit-large-patch14"
        ours = data.get("segllm_ros", {})
        hipie = HipieConfig(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in ours.get("hipie", {}).items()})  # fmt: skip
        config = cls(
            llm={"model_type": "llama", **{k: data[k] for k in LLAMA_KEYS if k in data}},
            vision_tower=str(tower),
            vision=tower_architecture(str(tower)),
            hipie=hipie,
            vision_feature_layer=int(data.get("mm_vision_select_layer", -2)),
        )
        if int(data.get("mm_hidden_size", config.vision["hidden_size"])) != int(
            config.vision["hidden_size"]
        ):
            raise ValueError(
                f"mm_hidden_size {data['mm_hidden_size']} differs from the CLIP tower's "
                f"width {config.vision['hidden_size']}"
            )
        return config

    @classmethod
    def load(cls, directory: str | Path, vision_tower: str | None = None) -> ReleasedConfig:
        path = Path(directory) / "config.json"
        return cls.from_released(json.loads(path.read_text()), vision_tower)


def tower_architecture(tower: str) -> dict[str, Any]:
    """The CLIP vision config of ``tower``: from its folder's ``config.json`` when local (a
    full CLIP config keeps the vision part under ``vision_config``), else a known id's."""
    path = Path(tower) / "config.json"
    if path.is_file():
        data = json.loads(path.read_text())
        data = data.get("vision_config", data)
        return {k: v for k, v in data.items() if k in (*CLIP_VIT_L14_224, "num_channels")}
    if tower in KNOWN_TOWERS:
        return dict(KNOWN_TOWERS[tower])
    raise ValueError(
        f"unknown CLIP tower {tower!r}: pass a local folder (vision_tower) or one of "
        f"{sorted(KNOWN_TOWERS)}"
    )
