"""GPT-4 steps of MRSeg: attribute descriptions of COCO instance crops (seed Table A2) and
the two-pass grammar correction of generated queries (seed Table A3).

Why the care: these are the only steps that cost money and time. Every request goes through
:class:`GptClient`: the official ``openai`` client against any OpenAI-compatible server (model,
base URL and key from :class:`GptConfig` / the environment; the key is read from the
environment when the client is made and never stored, printed or logged), an on-disk cache keyed
by the SHA-256 of the request (model, messages, temperature), so a re-run never asks twice,
retries with exponential backoff on connection errors, timeouts, rate limits and 5xx, and a
dry-run mode that answers nothing but counts the requests a real run would make.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
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
    "The image is a crop of one object of the class '{category}'. Describe the object in one "
    "short noun phrase (at most 12 words) that names its visible attributes, such as colour, "
    "material, pattern, shape, state and what it is doing, so that it can be told apart from "
    "other {category}s. Reply with the phrase only, starting with the class name or an "
    "adjective; no article, no full sentence."
)
"""Attribute description of an instance crop (after the seed's Table A2)."""

GRAMMAR_PROMPT = (
    "Correct the grammar of the following instruction so that it reads naturally. Keep its "
    "meaning. Copy every token in angle brackets, such as <instance 2> or <the output of round "
    "1>, exactly as it is. Reply with the corrected instruction only.\n\nInstruction: {text}"
)
GRAMMAR_CHECK_PROMPT = (
    "Check this instruction once more. If it is grammatical and natural, reply with it "
    "unchanged; otherwise reply with the corrected instruction only. Tokens in angle brackets "
    "must stay exactly as they are.\n\nInstruction: {text}"
)
"""The two passes of the grammar correction (after the seed's Table A3)."""

RETRYABLE = (
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.RateLimitError,
    openai.InternalServerError,
)


@dataclass
class GptConfig:
    """Where and how to ask. ``from_env`` reads ``MRSEG_GPT_MODEL``, ``OPENAI_BASE_URL``."""

    model: str = "gpt-4o"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key (the key itself is never stored)."""
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "segllm_mrseg" / "gpt")
    max_retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    temperature: float = 0.0
    max_tokens: int = 64
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

    def _request(self, messages: list[dict]) -> dict:
        return {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }

    def cache_path(self, messages: list[dict]) -> Path:
        digest = hashlib.sha256(
            json.dumps(self._request(messages), sort_keys=True).encode()
        ).hexdigest()
        return self.cfg.cache_dir / digest[:2] / f"{digest}.json"

    def chat(self, messages: list[dict]) -> str | None:
        """The answer text; ``None`` in a dry run when the answer is not cached yet."""
        path = self.cache_path(messages)
        if path.is_file():
            self.cache_hits += 1
            return json.loads(path.read_text())["answer"]
        if self.cfg.dry_run:
            self.planned += 1
            return None
        for attempt in range(self.cfg.max_retries + 1):
            try:
                response = self._openai().chat.completions.create(**self._request(messages))
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"request": self._request(messages), "answer": answer}))
        os.replace(tmp, path)
        return answer


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


def describe_instances(entries: Iterable[ImageEntry], client: GptClient) -> dict[str, str]:
    """``{annotation id: description}`` for every instance (Table A2 step)."""
    out: dict[str, str] = {}
    for entry in entries:
        image = load_image(entry.image_file) if entry.instances else None
        for inst in entry.instances:
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": DESCRIBE_PROMPT.format(category=inst.category)},
                        {
                            "type": "image_url",
                            "image_url": {"url": crop_data_url(image, inst.bbox)},
                        },
                    ],
                }
            ]
            answer = client.chat(messages)
            if answer:
                out[str(inst.ann_id)] = answer.rstrip(".").strip()
    return out


_TOKENS = re.compile(r"<[^<>]+>")


def correct_grammar(text: str, client: GptClient) -> str:
    """Two passes (correct, then check); the original stays when a pass alters a reference
    token such as ``<instance 2>`` (the model would learn a broken reference otherwise)."""
    current = text
    for prompt in (GRAMMAR_PROMPT, GRAMMAR_CHECK_PROMPT):
        answer = client.chat([{"role": "user", "content": prompt.format(text=current)}])
        if answer is None:  # dry run: count the check pass that would follow, answer nothing
            client.planned += prompt is GRAMMAR_PROMPT
            return text
        answer = answer.strip().strip('"')
        if sorted(_TOKENS.findall(answer)) != sorted(_TOKENS.findall(text)) or not answer:
            log.warning("grammar correction changed reference tokens; keeping %r", text)
            return text
        current = answer
    return current


def correct_records(
    records: Iterable[ConversationRecord], client: GptClient
) -> Iterator[ConversationRecord]:
    """Records with every query grammar-corrected (Table A3 step)."""
    for rec in records:
        for rnd in rec.rounds:
            rnd.query = correct_grammar(rnd.query, client)
        yield rec
