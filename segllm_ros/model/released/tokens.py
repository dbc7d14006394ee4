"""The released tokenizer: Vicuna's plus the 11 tokens upstream adds when it builds the model
(``ADDED_TOKENS``, ids 32000..32010). A release folder may or may not have saved them; they
are added here in upstream's order when missing, and the result must match the LLM's
vocabulary."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, LlamaConfig

from segllm_ros.model.released.config import ADDED_TOKENS


def add_released_tokens(tokenizer) -> None:
    """Add the missing ``ADDED_TOKENS`` (in place), as upstream does: special, unnormalised."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in ADDED_TOKENS if t not in vocab]
    if missing and len(missing) != len(ADDED_TOKENS):
        raise ValueError(f"the tokenizer has some of upstream's added tokens but not {missing}")
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(ADDED_TOKENS))
    if ids != list(range(ids[0], ids[0] + len(ADDED_TOKENS))):
        raise ValueError(f"upstream's added tokens are not consecutive ids: {ids}")


def load_tokenizer(directory: str | Path, llm_config: LlamaConfig):
    """The folder's tokenizer with upstream's added tokens, checked against the LLM's
    vocabulary. ``llm_config`` stands in for the folder's config.json, which ``AutoTokenizer``
    would otherwise read as transformers' own (different) LLaVA."""
    tokenizer = AutoTokenizer.from_pretrained(directory, config=llm_config, trust_remote_code=False)
    add_released_tokens(tokenizer)
    if len(tokenizer) != llm_config.vocab_size:
        raise ValueError(
            f"{directory}: the tokenizer has {len(tokenizer)} tokens, "
            f"the LLM {llm_config.vocab_size}"
        )
    return tokenizer
