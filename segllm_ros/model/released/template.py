"""The authors' prompt format (Vicuna v1 as their training data builds it), one round at a time.

Upstream writes the whole conversation as one string and tokenises it once::

    <s>{system} USER: <video>x256 {query} ASSISTANT: <seg></s>USER: <video><video>{query} ...

The image is 256 ``<video>`` placeholders at the start of the first user turn; each referenced
earlier round is two more (its mask token, its box token), written right before the query of
the round that refers to it; every answer is ``<seg>``. Rounds end with the special token
``</s>``, where tokenizers split, so tokenising each round on its own and concatenating gives
the ids of the whole: what the KV-cached engine needs.

References: upstream's ``[REF:k]`` is removed from the text (it only selects the mask, as in
the authors' CLI); this project's ``<the output of round k>`` / ``<instance k>`` become the
words upstream's data uses for an earlier output, "instance k".
"""

from __future__ import annotations

from segllm_ros.engine.references import rewrite_references
from segllm_ros.model.released.config import ReleasedConfig
from segllm_ros.model.template import RoundTokens

ROLES = ("USER", "ASSISTANT")
SEG_STATE_OFFSET = -1
"""Upstream decodes the hidden state *before* each ``<seg>`` (the one that predicts it)."""


def upstream_query(query: str) -> str:
    """The query as upstream's model reads it: ``[REF:k]`` dropped, this project's reference
    tokens written as "instance k"."""
    return rewrite_references(
        query, lambda k, token: "" if token.startswith("[") else f"instance {k}"
    )


def user_text(
    cfg: ReleasedConfig, query: str, num_refs: int, first: bool, num_image: int
) -> tuple[str, str]:
    """The user turn as (text before the query's placeholders, placeholders + query), ending
    before `` ASSISTANT:``."""
    if first:
        return (
            f"{cfg.system_prompt} {ROLES[0]}: ",
            cfg.image_token * num_image + " " + upstream_query(query),
        )
    return f"{ROLES[0]}: ", cfg.ref_token * 2 * num_refs + upstream_query(query)


def _ids(tokenizer, text: str, first: bool) -> list[int]:
    """Ids of ``text`` where it stands in the conversation: the first round at its start
    (after BOS), a later one right after the previous round's ``</s>``. Tokenised behind that
    ``</s>`` so that a tokenizer treating the text's very start specially (Llama's
    ``legacy=False`` adds "▁" there only) gives what the whole conversation holds."""
    if first:
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        return bos + tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    ids = tokenizer(tokenizer.eos_token + text, add_special_tokens=False)["input_ids"]
    if ids[:1] != [eos]:
        raise ValueError(f"the tokenizer does not split {tokenizer.eos_token!r} off the text")
    return ids[1:]


def tokenize_round(
    tokenizer,
    cfg: ReleasedConfig,
    query: str,
    answer: str | None,
    num_refs: int,
    first: bool,
    num_image_tokens: int,
) -> RoundTokens:
    """Ids of one round (``segllm_ros.model.template.tokenize_round``'s contract). The round
    is tokenised as one string, as upstream does; the user turn's ids must be a prefix of it
    (they are whenever the tokenizer does not merge across `` ASSISTANT:``). ``query_span``
    is exact up to a merge across its ends (it only serves turn pooling, unused here)."""
    head, body = user_text(cfg, query, num_refs, first, num_image_tokens)
    user = f"{head}{body} {ROLES[1]}:"
    user_ids = _ids(tokenizer, user, first)
    answer_ids: list[int] = []
    if answer is not None:
        ids = _ids(tokenizer, f"{user} {answer}{tokenizer.eos_token}", first)
        if ids[: len(user_ids)] != user_ids:
            raise ValueError("the tokenizer merges the user turn into the answer")
        answer_ids = ids[len(user_ids) :]
    span = (len(_ids(tokenizer, head, first)), len(_ids(tokenizer, head + body, first)))
    return RoundTokens(user_ids, answer_ids, span, seg_offset=SEG_STATE_OFFSET)
