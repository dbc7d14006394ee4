"""GPT-4 steps of MRSeg: attribute descriptions of COCO instance crops (Table A2) and the
two-pass correction of generated queries, grammar then meaning (Table A3).

Why the care: these are the only steps that cost money and time. Every request goes through
:class:`GptClient`: the official ``openai`` client against any OpenAI-compatible server (model,
base URL and key from :class:`GptConfig` / the environment; the key is read from the
environment when the client is made and never stored, printed or logged), an on-disk cache keyed
by the SHA-256 of the server's base URL and the request, so a re-run never asks twice,
retries with exponential backoff on connection errors, timeouts, rate limits and 5xx, and a
dry-run mode that answers nothing but counts the requests a real run would make.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import openai
from PIL import Image

from .entries import ImageEntry, load_image
from .schema import ConversationRecord

log = logging.getLogger(__name__)

DESCRIBE_PROMPT = (
    "The image is a crop around one object of the class '{category}'. Describe this object by "
    "what can be seen of it (colour, material, pattern, shape, state, what it is doing) so that "
    "it can be told apart from other objects, in one noun phrase of at most 15 words that does "
    "not contain the class name or a synonym of it (say 'animal', 'vehicle', 'object', ... "
    "instead). Answer with a list of two strings and nothing else: [the description, the exact "
    "class name of the object]."
)
"""Table A2: [a description without the class name, the exact class name] of an instance
crop (sent at low detail)."""

GRAMMAR_PROMPT = (
    "Correct the grammar of the following instruction so that it reads naturally, keeping its "
    "meaning. Copy every token in angle brackets, such as <instance 2> or <the output of round "
    '1>, exactly as it is. Answer in JSON: {{"corrected": "<the corrected instruction>"}}.'
    "\n\nInstruction: {text}"
)
MEANING_CHECK_PROMPT = (
    "An instruction was corrected for grammar. Check that the correction kept the original's "
    "meaning: the same object, the same relation and the same tokens in angle brackets. Answer "
    'in JSON: {{"result": ["Same", "None"]}} if the meaning is the same, otherwise '
    '{{"result": ["Different", "<a grammatical instruction with the original\'s '
    'meaning>"]}}.\n\nOriginal: {original}\nCorrected: {corrected}'
)
"""Table A3: a grammar correction, then a second pass that checks the correction kept the
original's meaning (``['Same', 'None']``) or gives the fix (``['Different', fix]``)."""


@dataclass(frozen=True)
class GptStep:
    """What one step sends besides its messages (Tables A2/A3)."""

    model: str
    """The pinned snapshot the appendix used; ``GptConfig.model`` overrides it."""
    max_tokens: int
    json_output: bool


DESCRIBE = GptStep("gpt-4-turbo-2024-04-09", max_tokens=200, json_output=False)
CORRECT = GptStep("gpt-4o-2024-05-13", max_tokens=200, json_output=True)

OPENAI_URL = "https://api.openai.com/v1"
"""Where the ``openai`` client sends requests when neither the config nor the environment
names a server."""

RETRYABLE = (
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.RateLimitError,
    openai.InternalServerError,
)


@dataclass
class GptConfig:
    """Where and how to ask. ``from_env`` reads ``MRSEG_GPT_MODEL``, ``OPENAI_BASE_URL``."""

    model: str | None = None
    """None: each step's pinned model (:data:`DESCRIBE`, :data:`CORRECT`)."""
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key (the key itself is never stored)."""
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "segllm_mrseg" / "gpt")
    max_retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    temperature: float = 0.0
    dry_run: bool = False

    @classmethod
    def from_env(cls, **overrides) -> GptConfig:
        env = {
            "model": os.environ.get("MRSEG_GPT_MODEL"),
            "base_url": os.environ.get("OPENAI_BASE_URL"),
        }
        return replace(cls(), **{k: v for k, v in env.items() if v}, **overrides)


class GptClient:
    """Cached, retrying chat completions. Counters: ``sent`` (HTTP requests that succeeded),
    ``retries``, ``cache_hits``, ``planned`` (requests a dry run would have sent)."""

    def __init__(self, cfg: GptConfig) -> None:
        self.cfg = cfg
        self.sent = self.retries = self.cache_hits = self.planned = 0
        self._client: openai.OpenAI | None = None

    def _openai(self) -> openai.OpenAI:
        if self._client is None:
            key = os.environ.get(self.cfg.api_key_env)
            if not key:
                raise RuntimeError(
                    f"set ${self.cfg.api_key_env} to the API key (or use the dry run)"
                )
            self._client = openai.OpenAI(
                api_key=key, base_url=self.cfg.base_url, timeout=self.cfg.timeout_s, max_retries=0
            )
        return self._client

    def _request(self, messages: list[dict], step: GptStep) -> dict:
        request = {
            "model": self.cfg.model or step.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": step.max_tokens,
        }
        if step.json_output:
            request["response_format"] = {"type": "json_object"}
        return request

    def cache_path(self, messages: list[dict], step: GptStep) -> Path:
        """Keyed by the server too: two servers may answer the same request differently."""
        server = self.cfg.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
        key = {"base_url": server.rstrip("/"), "request": self._request(messages, step)}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.cfg.cache_dir / digest[:2] / f"{digest}.json"

    def chat(self, messages: list[dict], step: GptStep) -> str | None:
        """The answer text; ``None`` in a dry run when the answer is not cached yet."""
        path = self.cache_path(messages, step)
        if path.is_file():
            self.cache_hits += 1
            return json.loads(path.read_text())["answer"]
        if self.cfg.dry_run:
            self.planned += 1
            return None
        for attempt in range(self.cfg.max_retries + 1):
            try:
                response = self._openai().chat.completions.create(**self._request(messages, step))
                break
            except RETRYABLE as exc:
                if attempt == self.cfg.max_retries:
                    raise
                self.retries += 1
                delay = self.cfg.backoff_s * 2**attempt
                log.warning(
                    "GPT request failed (%s); retry %d in %.1fs",
                    type(exc).__name__,
                    attempt + 1,
                    delay,
                )
                time.sleep(delay)
        self.sent += 1
        answer = (response.choices[0].message.content or "").strip()
        write_cache(path, {"request": self._request(messages, step), "answer": answer})
        return answer


def write_cache(path: Path, entry: dict) -> None:
    """Write atomically under a temporary name of this writer's own, so two processes or
    threads answering the same request never rename each other's half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp", delete=False
    ) as f:
        f.write(json.dumps(entry))
    os.replace(f.name, path)


def crop_data_url(
    image: np.ndarray, box: tuple[float, float, float, float], pad: float = 0.1
) -> str:
    """JPEG data URL of the box (padded by ``pad`` of its size), for the vision message."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    px, py = (x1 - x0) * pad, (y1 - y0) * pad
    crop = image[
        max(0, int(y0 - py)) : min(h, int(np.ceil(y1 + py))),
        max(0, int(x0 - px)) : min(w, int(np.ceil(x1 + px))),
    ]
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _parse(answer: str, json_object: bool) -> object:
    """A JSON answer (object mode) or a list answer, possibly written with Python quotes as in
    the tables (``['Same', 'None']``); None when it is neither."""
    text = answer.strip().removeprefix("```json").strip("`").strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if json_object:
            return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, str) and v.strip() for v in value)
    )


def describe_instances(entries: Iterable[ImageEntry], client: GptClient) -> dict[str, dict]:
    """``{annotation id: {"description", "class_name"}}`` for every instance whose answer is
    the pair Table A2 asks for and whose description leaves out the class name."""
    out: dict[str, dict] = {}
    for entry in entries:
        image = load_image(entry.image_file) if entry.instances else None
        for inst in entry.instances:
            url = crop_data_url(image, inst.bbox)
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": DESCRIBE_PROMPT.format(category=inst.category)},
                        {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                    ],
                }
            ]
            answer = client.chat(messages, DESCRIBE)
            if answer is None:
                continue
            pair = _parse(answer, json_object=False)
            if not _is_pair(pair):
                log.warning(
                    "annotation %s: not a [description, class] pair: %r", inst.ann_id, answer
                )
                continue
            description, class_name = (v.strip() for v in pair)
            if re.search(rf"\b{re.escape(inst.category)}", description, re.IGNORECASE):
                log.warning(
                    "annotation %s: the description names the class: %r", inst.ann_id, description
                )
                continue
            out[str(inst.ann_id)] = {
                "description": description.rstrip(".").strip(),
                "class_name": class_name,
            }
    return out


_TOKENS = re.compile(r"<[^<>]+>")


def _same_tokens(text: str, original: str) -> bool:
    return bool(text) and sorted(_TOKENS.findall(text)) == sorted(_TOKENS.findall(original))


def correct_grammar(text: str, client: GptClient) -> str:
    """Table A3: correct, then check the correction kept the meaning (``['Same', 'None']``
    keeps it, ``['Different', fix]`` takes the fix). The original stays when an answer is
    malformed or alters a reference token such as ``<instance 2>`` (the model would learn a
    broken reference otherwise)."""
    answer = client.chat([{"role": "user", "content": GRAMMAR_PROMPT.format(text=text)}], CORRECT)
    if answer is None:  # dry run: count the check pass that would follow, answer nothing
        client.planned += 1
        return text
    parsed = _parse(answer, json_object=True)
    corrected = parsed.get("corrected") if isinstance(parsed, dict) else None
    if not isinstance(corrected, str) or not _same_tokens(corrected.strip(), text):
        log.warning("grammar correction malformed or changed reference tokens; keeping %r", text)
        return text
    corrected = corrected.strip()
    prompt = MEANING_CHECK_PROMPT.format(original=text, corrected=corrected)
    answer = client.chat([{"role": "user", "content": prompt}], CORRECT)
    parsed = _parse(answer or "", json_object=True)
    verdict = parsed.get("result") if isinstance(parsed, dict) else None
    if _is_pair(verdict) and verdict[0].strip().lower() == "same":
        return corrected
    if _is_pair(verdict) and verdict[0].strip().lower() == "different":
        fix = verdict[1].strip()
        if _same_tokens(fix, text):
            return fix
    log.warning("meaning check malformed or broke reference tokens; keeping %r", text)
    return text


def correct_records(
    records: Iterable[ConversationRecord], client: GptClient
) -> Iterator[ConversationRecord]:
    """Records with every query grammar-corrected (Table A3 step)."""
    for rec in records:
        for rnd in rec.rounds:
            rnd.query = correct_grammar(rnd.query, client)
        yield rec
