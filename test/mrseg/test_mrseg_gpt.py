"""GPT-4 steps against a real OpenAI-compatible HTTP server on 127.0.0.1 (no mocked client)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from segllm_training.mrseg import fixtures as fx
from segllm_training.mrseg.build import read_source
from segllm_training.mrseg.gpt import GptClient, GptConfig, correct_grammar, describe_instances

KEY = "sk-test-secret-never-logged"


class ChatServer:
    """``POST /v1/chat/completions``; the first ``fail_first`` requests get HTTP 500.
    Answers: Table A3's grammar pass (capitalised, full stop) and meaning check (``verdict``),
    Table A2's [description, class] pair (``describe``) for images."""

    def __init__(self, fail_first: int = 0, rewrite=None, verdict=None, describe=None) -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.rewrite = rewrite or (lambda text: text)
        self.verdict = verdict or (lambda original, corrected: ["Same", "None"])
        self.describe = describe or "['blue striped object with a chipped handle', 'mug']"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if len(server.requests) <= server.fail_first:
                    self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                    return
                content = body["messages"][-1]["content"]
                if isinstance(content, list):
                    answer = server.describe
                elif "Instruction: " in content:
                    text = content.rsplit("Instruction: ", 1)[1]
                    fixed = server.rewrite(text[0].upper() + text[1:].rstrip(".") + ".")
                    answer = json.dumps({"corrected": fixed})
                else:
                    original, corrected = content.rsplit("Original: ", 1)[1].split("\nCorrected: ")
                    answer = json.dumps({"result": server.verdict(original, corrected)})
                self._send(
                    200,
                    {
                        "id": "c1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": answer},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def _send(self, status: int, payload: dict) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def client_for(tmp_path, monkeypatch):
    monkeypatch.setenv("MRSEG_TEST_KEY", KEY)

    def make(server: ChatServer, **kw) -> GptClient:
        kw = {"model": "gpt-4-test", "cache_dir": tmp_path / "cache", **kw}
        return GptClient(
            GptConfig(base_url=server.url, backoff_s=0.01, api_key_env="MRSEG_TEST_KEY", **kw)
        )

    return make


def test_grammar_two_passes_retry_and_cache(client_for, caplog):
    caplog.set_level(logging.DEBUG)
    with ChatServer(fail_first=2) as server:
        client = client_for(server)
        fixed = correct_grammar("the cup to the left of <instance 1>", client)
        assert fixed == "The cup to the left of <instance 1>."
        assert client.retries == 2 and client.sent == 2  # 2 failures, then pass 1 and pass 2
        assert len(server.requests) == 4
        assert all(r["path"] == "/v1/chat/completions" for r in server.requests)
        assert server.requests[-1]["auth"] == f"Bearer {KEY}"
        assert server.requests[-1]["body"]["model"] == "gpt-4-test"  # the override
        again = client_for(server)  # a new process would start like this: cache on disk
        assert correct_grammar("the cup to the left of <instance 1>", again) == fixed
        assert len(server.requests) == 4 and again.cache_hits == 2 and again.sent == 0
    assert KEY not in caplog.text


def test_dry_run_counts_without_sending(client_for):
    with ChatServer() as server:
        dry = client_for(server, dry_run=True)
        assert (
            correct_grammar("the dog below <the output of round 2>", dry)
            == "the dog below <the output of round 2>"
        )
        assert dry.planned == 2 and not server.requests


def test_gives_up_after_retries(client_for):
    import openai

    with ChatServer(fail_first=100) as server:
        client = client_for(server, max_retries=2)
        with pytest.raises(openai.InternalServerError):
            correct_grammar("the cup", client)
        assert len(server.requests) == 3


def test_reference_tokens_must_survive(client_for):
    with ChatServer(rewrite=lambda text: text.replace("<instance 1>", "instance one")) as server:
        client = client_for(server)
        assert correct_grammar("the cup near <instance 1>", client) == "the cup near <instance 1>"
        assert len(server.requests) == 1  # the broken first pass is not checked again


def test_describe_crops(client_for, tmp_path):
    fx.write_coco_instances(tmp_path / "coco", np.random.default_rng(0), "val", 2)
    from segllm_training.mrseg.entries import BadRecords
    from segllm_training.mrseg.readers.coco import read_coco_instances

    entries = read_coco_instances(tmp_path / "coco", "val", BadRecords(False))
    n = sum(len(e.instances) for e in entries)
    with ChatServer() as server:
        dry = client_for(server, dry_run=True)
        assert describe_instances(entries, dry) == {} and dry.planned == n
        client = client_for(server)
        out = describe_instances(entries, client)
        assert len(out) == n and len(server.requests) == n
        assert {json.dumps(v) for v in out.values()} == {
            json.dumps(
                {"description": "blue striped object with a chipped handle", "class_name": "mug"}
            )
        }
        image_part = server.requests[0]["body"]["messages"][0]["content"][1]
        assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,")
        describe_instances(entries, client)
        assert len(server.requests) == n  # all from the cache now
    (tmp_path / "coco" / "attributes_val2017.json").write_text(json.dumps(out))
    built, _ = read_source("attributes_coco", tmp_path / "coco", "val")
    assert all(i.captions for e in built for i in e.instances)


def test_describe_follows_table_a2(client_for, tmp_path):
    """19.4: the pinned gpt-4-turbo-2024-04-09, the crop at low detail, 200 tokens, and the
    answer [description without the class name, class name]; a description that names the
    class, or an answer that is not the pair, is left out."""
    fx.write_coco_instances(tmp_path / "coco", np.random.default_rng(0), "val", 2)
    from segllm_training.mrseg.entries import BadRecords
    from segllm_training.mrseg.readers.coco import read_coco_instances

    entries = read_coco_instances(tmp_path / "coco", "val", BadRecords(False))
    first = entries[0].instances[0]
    answers = {
        "pair": json.dumps(["small red object with a white rim", first.category]),
        "names the class": f"['red {first.category} with a white rim', '{first.category}']",
        "no pair": f"A red {first.category}.",
    }
    for what, answer in answers.items():
        with ChatServer(describe=answer) as server:
            client = client_for(server, model=None, cache_dir=tmp_path / what)
            out = describe_instances(entries[:1], client)
            body = server.requests[0]["body"]
            assert body["model"] == "gpt-4-turbo-2024-04-09" and body["max_tokens"] == 200
            assert body["messages"][0]["content"][1]["image_url"]["detail"] == "low"
            assert "response_format" not in body
            prompt = body["messages"][0]["content"][0]["text"]
            assert "not contain the class name" in prompt and "[the description" in prompt
        if what == "pair":
            assert out[str(first.ann_id)] == {
                "description": "small red object with a white rim",
                "class_name": first.category,
            }
        else:
            assert str(first.ann_id) not in out


def test_correction_checks_meaning_as_table_a3(client_for):
    """19.4: pinned gpt-4o-2024-05-13 with JSON output; the second pass compares the
    correction with the original's meaning: ['Same', 'None'] keeps the correction,
    ['Different', fix] takes the fix (before: a second grammar pass, plain text)."""
    text = "the cup to the left of <instance 1>"

    def different(original, corrected):
        return ["Different", "The cup left of <instance 1>."]

    with ChatServer(verdict=different) as server:
        client = client_for(server, model=None)
        assert correct_grammar(text, client) == "The cup left of <instance 1>."
        first, second = (r["body"] for r in server.requests)
        for body in (first, second):
            assert body["model"] == "gpt-4o-2024-05-13"
            assert body["response_format"] == {"type": "json_object"}
        check = second["messages"][0]["content"]
        assert f"Original: {text}" in check
        assert "Corrected: The cup to the left of <instance 1>." in check
        assert "meaning" in check and '["Same", "None"]' in check
    broken = lambda original, corrected: ["Different", "the cup left of it"]  # noqa: E731
    with ChatServer(verdict=broken) as server:
        assert correct_grammar(text, client_for(server, model=None)) == text


def test_cache_key_includes_the_server(client_for):
    """Issue 16.8: the same request to two servers is two cache entries (before: the
    second server's answer was the first's)."""
    with ChatServer() as one, ChatServer(rewrite=lambda t: t.replace("cup", "mug")) as two:
        assert correct_grammar("the cup", client_for(one)) == "The cup."
        assert correct_grammar("the cup", client_for(two)) == "The mug."
        assert len(one.requests) == 2 and len(two.requests) == 2
        assert correct_grammar("the cup", client_for(one)) == "The cup."
        assert len(one.requests) == 2  # still cached per server


def test_two_writers_of_one_cache_entry_do_not_collide(tmp_path):
    """Issue 16.8: writers of the same entry each use their own temporary file (before: one
    ``<digest>.tmp`` for all, so one writer renamed the other's file away mid-write)."""
    from segllm_training.mrseg.gpt import write_cache

    path = tmp_path / "ab" / "abcdef.json"
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(200):
                write_cache(path, {"request": {"k": k, "i": i}, "answer": "x" * 2000})
        except BaseException as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert json.loads(path.read_text())["answer"] == "x" * 2000
    assert [p.name for p in path.parent.iterdir()] == ["abcdef.json"]  # no temp files left
