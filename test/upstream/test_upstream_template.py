"""The released family's prompt format against the authors' template code: the ids of a
3-round conversation (image, references, ``<seg>`` answers) equal those their
``conversation.py`` + ``train.py`` produce (recorded once, outside this repository, with the
same tokenizer: fixtures/template_ids.json), round by round as the KV-cached engine feeds them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from released_folder import tiny_tokenizer

from segllm_ros.engine.references import BadReferenceError, resolve_references
from segllm_ros.model.released.config import ReleasedConfig
from segllm_ros.model.released.template import tokenize_round

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "template_ids.json").read_text())
CONFIG = ReleasedConfig(llm={}, vision_tower="openai/clip-vit-large-patch14", vision={})


LEGACY = {"legacy": True, "non_legacy": False}


def conversation_ids(
    queries: list[str], ref_rounds: list[list[int]], legacy: bool = True
) -> list[int]:
    tok = tiny_tokenizer(legacy)
    ids: list[int] = []
    for i, (query, refs) in enumerate(zip(queries, ref_rounds, strict=True)):
        rnd = tokenize_round(
            tok, CONFIG, query, CONFIG.seg_answer, len(refs), i == 0, FIXTURE["num_image_tokens"]
        )
        ids += rnd.ids
    return ids


@pytest.mark.parametrize("variant", sorted(LEGACY))
def test_upstream_template_ids_equal_authors_code(variant: str) -> None:
    """Per round, as the engine feeds them, with either Llama tokenizer behaviour (the
    non-legacy one treats the text's start specially: later rounds must not be tokenised as
    if they started the text)."""
    refs = [resolve_references(q, [], i) for i, q in enumerate(FIXTURE["queries"])]
    assert refs == FIXTURE["ref_rounds"]  # the engine reads upstream's [REF:k] too
    ids = conversation_ids(FIXTURE["queries"], refs, LEGACY[variant])
    assert ids == FIXTURE["input_ids"][variant]


@pytest.mark.parametrize(
    "third",
    [
        "Segment the object that <instance 1> is holding.",
        "Segment the object that <the output of round 1> is holding.",
    ],
)
def test_upstream_template_project_reference_forms(third: str) -> None:
    """This project's reference tokens become the words upstream's data uses ("instance k"):
    the same ids as the authors' conversation referring with [REF:k]."""
    queries = [*FIXTURE["queries"][:2], third]
    ids = conversation_ids(queries, FIXTURE["ref_rounds"])
    assert ids == FIXTURE["input_ids"]["legacy"]


def test_upstream_template_seg_state_and_split() -> None:
    """Each round splits into the user turn (ends with "ASSISTANT:") and the answer, and the
    mask decoder reads the state before ``<seg>``, as upstream does."""
    tok = tiny_tokenizer()
    rnd = tokenize_round(tok, CONFIG, "Segment his hair.", "<seg>", 1, False, 256)
    seg = tok.convert_tokens_to_ids("<seg>")
    assert rnd.answer_ids[-2:] == [seg, tok.eos_token_id] and rnd.seg_offset == -1
    assert tok.decode(rnd.user_ids).replace(" ", "").endswith("ASSISTANT:")
    start, end = rnd.query_span
    assert rnd.user_ids[start : start + 2] == [tok.convert_tokens_to_ids("<video>")] * 2
    query = tok("Segment his hair.", add_special_tokens=False)["input_ids"]
    # the last piece may merge with " ASSISTANT" (BPE across the boundary, as Llama's does)
    assert end - start == 2 + len(query) and rnd.user_ids[start + 2 : end - 1] == query[:-1]


def test_upstream_template_ref_to_a_missing_round_is_refused() -> None:
    """``[REF:k]`` is validated like this project's forms, before anything runs."""
    with pytest.raises(BadReferenceError, match="round 3 does not exist"):
        resolve_references("Segment his hair.[REF:3]", [], 1)
    assert resolve_references("Segment [ref: 1] and <instance 2>", [], 2) == [1, 2]
