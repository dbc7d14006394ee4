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
    Answers: a grammar fix (capitalised, full stop) for text prompts, a description for images."""

    def __init__(self, fail_first: int = 0, rewrite=None) -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.rewrite = rewrite or (lambda text: text)
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
                    answer = "blue striped mug with a chipped handle."
                else:
                    text = content.rsplit("Instruction: ", 1)[1]
                    answer = server.rewrite(text[0].upper() + text[1:].rstrip(".") + ".")
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
        return GptClient(
            GptConfig(
                model="gpt-4-test",
                base_url=server.url,
                backoff_s=0.01,
                api_key_env="MRSEG_TEST_KEY",
                cache_dir=tmp_path / "cache",
                **kw,
            )
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
        assert server.requests[-1]["body"]["model"] == "gpt-4-test"
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
        assert set(out.values()) == {"blue striped mug with a chipped handle"}
        image_part = server.requests[0]["body"]["messages"][0]["content"][1]
        assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,")
        describe_instances(entries, client)
        assert len(server.requests) == n  # all from the cache now
    (tmp_path / "coco" / "attributes_val2017.json").write_text(json.dumps(out))
    built, _ = read_source("attributes_coco", tmp_path / "coco", "val")
    assert all(i.captions for e in built for i in e.instances)
