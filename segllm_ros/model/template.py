"""Conversation text (Vicuna v1) and its token ids, one round at a time.

Each round is tokenised on its own and the conversation is the concatenation of its rounds,
so the ids fed incrementally with a KV cache are exactly the ids of a full recompute.
"""

from __future__ import annotations

from dataclasses import dataclass

from segllm_ros.model.config import SegLLMConfig


@dataclass
class RoundTokens:
    """Token ids of one round: the user turn (ends with ``ASSISTANT:``) and the answer.
    ``query_span`` is [start, end) of the reference placeholders + query inside ``user_ids``;
    the mask decoder reads the hidden state ``seg_offset`` positions from the ``<seg>`` token
    (its own here; the released family's prompt format reads the one before it)."""

    user_ids: list[int]
    answer_ids: list[int]
    query_span: tuple[int, int] = (0, 0)
    seg_offset: int = 0

    @property
    def ids(self) -> list[int]:
        return self.user_ids + self.answer_ids


def user_parts(cfg: SegLLMConfig, query: str, num_refs: int, first: bool) -> tuple[str, str, str]:
    """The user turn as (prefix, references + query, suffix). Reference placeholders (mask +
    box token per earlier round) open the query; the image (round 1 only) comes right after
    the system prompt."""
    refs = (cfg.ref_token * 2) * num_refs
    body = f"{refs} {query}" if refs else query
    prefix = f"{cfg.system_prompt} USER: {cfg.image_token}\n" if first else "USER: "
    return prefix, body, " ASSISTANT:"


def answer_text(answer: str, eos: str) -> str:
    return f" {answer}{eos}"


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_round(
    tokenizer,
    cfg: SegLLMConfig,
    query: str,
    answer: str | None,
    num_refs: int,
    first: bool,
    num_image_tokens: int,
) -> RoundTokens:
    """Ids of one round; the single ``<image>`` id is expanded to ``num_image_tokens``
    placeholders that the model fills with projected vision tokens. The parts are tokenised
    separately so the query's position is known exactly."""
    image_id = tokenizer.convert_tokens_to_ids(cfg.image_token)
    prefix, body, suffix = user_parts(cfg, query, num_refs, first)
    head = _ids(tokenizer, prefix)
    if first:
        if tokenizer.bos_token_id is not None:
            head = [tokenizer.bos_token_id, *head]
        at = head.index(image_id)
        head = head[:at] + [image_id] * num_image_tokens + head[at + 1 :]
    middle = _ids(tokenizer, body)
    user = head + middle + _ids(tokenizer, suffix)
    answer_ids: list[int] = []
    if answer is not None:
        answer_ids = _ids(tokenizer, answer_text(answer, tokenizer.eos_token or ""))
    return RoundTokens(user, answer_ids, (len(head), len(head) + len(middle)))
