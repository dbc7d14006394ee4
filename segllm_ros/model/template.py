"""Conversation text (Vicuna v1) and its token ids, one round at a time.

Each round is tokenised on its own and the conversation is the concatenation of its rounds,
so the ids fed incrementally with a KV cache are exactly the ids of a full recompute.
"""

from __future__ import annotations

from dataclasses import dataclass

from segllm_ros.model.config import SegLLMConfig


@dataclass
class RoundTokens:
    """Token ids of one round: the user turn (ends with ``ASSISTANT:``) and the answer."""

    user_ids: list[int]
    answer_ids: list[int]

    @property
    def ids(self) -> list[int]:
        return self.user_ids + self.answer_ids


def user_text(cfg: SegLLMConfig, query: str, num_refs: int, first: bool) -> str:
    """The user turn. Reference placeholders (mask + box token per earlier round) open it,
    the image (round 1 only) comes right after the system prompt."""
    refs = (cfg.ref_token * 2) * num_refs
    refs = refs + " " if refs else ""
    if first:
        return f"{cfg.system_prompt} USER: {cfg.image_token}\n{refs}{query} ASSISTANT:"
    return f"USER: {refs}{query} ASSISTANT:"


def answer_text(answer: str, eos: str) -> str:
    return f" {answer}{eos}"


def tokenize_round(tokenizer, cfg: SegLLMConfig, query: str, answer: str | None,
                   num_refs: int, first: bool, num_image_tokens: int) -> RoundTokens:
    """Ids of one round; the single ``<image>`` id is expanded to ``num_image_tokens``
    placeholders that the model fills with projected vision tokens."""
    image_id = tokenizer.convert_tokens_to_ids(cfg.image_token)
    user = tokenizer(user_text(cfg, query, num_refs, first), add_special_tokens=False)["input_ids"]
    if first:
        if tokenizer.bos_token_id is not None:
            user = [tokenizer.bos_token_id, *user]
        at = user.index(image_id)
        user = user[:at] + [image_id] * num_image_tokens + user[at + 1:]
    answer_ids: list[int] = []
    if answer is not None:
        answer_ids = tokenizer(answer_text(answer, tokenizer.eos_token or ""),
                               add_special_tokens=False)["input_ids"]
    return RoundTokens(user, answer_ids)
