"""A closed-vocabulary word tokenizer for small models trained from scratch.

Real models use their own tokenizer (LLaVA's); the demo model and the tests need one that
is tiny, deterministic and saved in the standard Hugging Face format.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

WORD_PATTERN = r"\w+|[^\w\s]"
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>", "<seg>", "<ref>")


def build_word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``words`` (split with ``WORD_PATTERN``) plus the special
    tokens the model needs."""
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in sorted(set(words)):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<image>", "<seg>", "<ref>"],
    )
