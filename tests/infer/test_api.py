"""The chat-model interface: a fake OpenAI-compatible server on 127.0.0.1, and a tiny local model.

The server answers from a script of (status, body, delay) and records every
request, so each test checks what was sent (path, headers, JSON) and how the
client treats the answer. Nothing here leaves 127.0.0.1.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmlab.common.errors import UserError
from llmlab.infer.api import EndpointChat, LocalChat, _error_message, chat_all, end_of_turn_ids, reply_text


def completion(text: str) -> dict:
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


class FakeServer:
    """An OpenAI-compatible server in a thread: `script` is a list of (status, body, delay_s[, headers])
    answered in turn (the last one repeats); `requests` collects (path, headers, JSON body)."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                status, answer, delay, *headers = outer.script[min(len(outer.requests), len(outer.script)) - 1]
                time.sleep(delay)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers[0] if headers else {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def client(url: str, **kwargs) -> EndpointChat:
    sleeps = []
    chat = EndpointChat("judge-1", url, kwargs.pop("api_key", "sk-test"), sleep=sleeps.append, **kwargs)
    chat.sleeps = sleeps
    return chat


def test_request_and_answer():
    with FakeServer([(200, completion("Rating: [[7]]"), 0)]) as server:
        chat = client(server.url)
        assert chat.chat([{"role": "user", "content": "hi"}], max_new_tokens=12, temperature=0.5) == "Rating: [[7]]"
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test" and headers["Content-Type"] == "application/json"
    assert body == {"model": "judge-1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12,
                    "temperature": 0.5}


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("LLMLAB_API_KEY", "sk-llmlab")
    chat = EndpointChat("m")
    assert chat.url == "http://127.0.0.1:9/v1/chat/completions" and chat.api_key == "sk-llmlab"
    assert EndpointChat("m", "http://127.0.0.1:8/v1", "k").url == "http://127.0.0.1:8/v1/chat/completions"


def test_no_key_sends_no_authorization(monkeypatch):
    for name in ("LLMLAB_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with FakeServer([(200, completion("ok"), 0)]) as server:
        assert EndpointChat("m", server.url).chat([{"role": "user", "content": "hi"}]) == "ok"
    assert "Authorization" not in server.requests[0][1]


def test_retries_server_errors_with_backoff():
    script = [(500, {"error": {"message": "boom"}}, 0), (503, b"busy", 0), (200, completion("fine"), 0)]
    with FakeServer(script) as server:
        chat = client(server.url, backoff=0.5)
        assert chat.chat([{"role": "user", "content": "hi"}]) == "fine"
    assert len(server.requests) == 3 and chat.sleeps == [0.5, 1.0]


def test_rate_limit_honours_retry_after_then_gives_up():
    with FakeServer([(429, {"error": {"message": "slow down"}}, 0, {"Retry-After": "2"})]) as server:
        chat = client(server.url, max_retries=2)
        with pytest.raises(UserError, match=r"HTTP 429 slow down after 3 attempt"):
            chat.chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 3 and chat.sleeps == [2.0, 2.0]


def test_timeout_is_retried_then_reported():
    with FakeServer([(200, completion("late"), 1.0)]) as server:
        chat = client(server.url, timeout=0.2, max_retries=1, backoff=0.0)
        start = time.perf_counter()
        with pytest.raises(UserError, match=r"no answer within 0.2 s after 2 attempt"):
            chat.chat([{"role": "user", "content": "hi"}])
        assert time.perf_counter() - start < 1.9  # waiting for the server would take 2 s
    assert len(server.requests) == 2


@pytest.mark.parametrize("status, body, message", [
    (401, {"error": {"message": "Incorrect API key"}}, r"API key was rejected \(HTTP 401: Incorrect API key\)"),
    (404, {"error": "no such model"}, r"not found \(HTTP 404: no such model\); check base_url"),
    (400, b"plain text", r"refused \(HTTP 400: plain text\)"),
    (200, b"<html>not json</html>", r"the answer is not JSON"),
    (200, {"object": "list", "data": []}, r"not a chat completion"),
])
def test_errors_are_one_line(status, body, message):
    with FakeServer([(status, body, 0)]) as server:
        with pytest.raises(UserError, match=message) as info:
            client(server.url).chat([{"role": "user", "content": "hi"}])
    assert "\n" not in str(info.value) and len(server.requests) == 1  # none of these is retried


def test_unreachable_host():
    with FakeServer([]) as server:
        url = server.url
    with pytest.raises(UserError, match=r"127\.0\.0\.1.*cannot reach the endpoint.*OPENAI_BASE_URL"):
        client(url).chat([{"role": "user", "content": "hi"}])


def test_bad_arguments():
    with pytest.raises(ValueError, match="timeout"):
        EndpointChat("m", "http://127.0.0.1:9", timeout=0)
    with pytest.raises(ValueError, match="workers"):
        chat_all(None, [], workers=0)


def test_small_pure_helpers():
    assert reply_text(completion("4")) == "4"
    assert reply_text({"choices": [{"message": {"role": "assistant", "content": None}}]}) == ""
    assert _error_message(b'{"error": {"message": "bad key"}}') == "bad key"
    assert _error_message(b"<h1>502</h1>") == "<h1>502</h1>"


def test_chat_all_keeps_order_with_workers():
    with FakeServer([(200, completion("same"), 0.05)]) as server:
        replies = chat_all(client(server.url), [[{"role": "user", "content": str(i)}] for i in range(6)], workers=3)
    assert replies == ["same"] * 6
    assert sorted(int(r[2]["messages"][0]["content"]) for r in server.requests) == list(range(6))


def tiny_lm():
    import torch

    from llmlab.infer.pretrained import Pretrained
    from llmlab.models import Transformer, get_preset
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train("some text " * 200, 300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=tok.vocab_size, seq_len=128)).eval()
    return Pretrained(model, tok, "tiny")


def test_local_chat_is_greedy_generation_with_the_chat_template():
    lm = tiny_lm()
    stops = end_of_turn_ids(lm.tokenizer)
    assert stops == {lm.tokenizer.special_tokens["<|endoftext|>"], lm.tokenizer.special_tokens["<|im_end|>"]}
    messages = [{"role": "user", "content": "some text"}]
    ids = lm.generate(lm.chat_ids(messages), 6, temperature=0.0, stop_ids=stops)
    reply = LocalChat(lm).chat(messages, max_new_tokens=6)
    assert reply == lm.tokenizer.decode([t for t in ids if t not in stops])
    assert LocalChat(lm).chat(messages, max_new_tokens=6) == reply  # greedy: the same reply twice
    with pytest.raises(UserError, match="context window"):
        LocalChat(lm).chat([{"role": "user", "content": "x " * 200}], max_new_tokens=6)
    assert isinstance(LocalChat(lm, truncate=True).chat([{"role": "user", "content": "x " * 200}], 6), str)


def test_local_chat_drops_the_stop_token():
    lm = tiny_lm()
    end = lm.tokenizer.special_tokens["<|im_end|>"]
    lm.generate = lambda ids, n, **kw: lm.tokenizer.encode("some text") + [end]  # a model that ends its turn
    assert LocalChat(lm).chat([{"role": "user", "content": "hi"}]) == "some text"
