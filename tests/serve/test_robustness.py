"""The server under misuse: bounded parameters, overload, disconnects, keys, shutdown, a crashed engine, and a
soak of mixed concurrent requests after which no KV block is leaked and every good answer is right."""

import asyncio
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from llmlab.infer.api import end_of_turn_ids
from llmlab.infer.text import stream_text
from tests.serve.conftest import metric, wait_for_metric

HI = [{"role": "user", "content": "hi"}]
ERROR_KEYS = {"message", "type", "param", "code"}


def chat(**fields) -> dict:
    return {"model": "tiny-chat", "messages": HI, **fields}


BAD_CHAT = [
    ("max_tokens", chat(max_tokens=1000)),  # more than the 128-token context window
    ("max_tokens", chat(max_tokens=0)),
    ("max_completion_tokens", chat(max_completion_tokens=-5)),
    ("n", chat(n=17)),  # above max_n
    ("n", chat(n=0)),
    ("messages", chat(messages=[{"role": "user", "content": "word " * 200}])),  # prompt longer than the context
    ("temperature", chat(temperature=-0.5)),
    ("temperature", chat(temperature=2.5)),
    ("top_p", chat(top_p=0)),
    ("top_p", chat(top_p=1.5)),
    ("stop", chat(stop=["a", "b", "c", "d", "e"])),
    ("stop", chat(stop=7)),
    ("messages.0.role", chat(messages=[{"role": "wizard", "content": "hi"}])),
    ("messages", chat(messages=[])),
    ("messages", {"model": "tiny-chat"}),
    ("messages.0.content", chat(messages=[{"role": "user", "content": {"text": "hi"}}])),
    ("temperature", chat(temperature="0.5")),  # a string is not a number
    ("n", chat(n=1.5)),
    ("stream", chat(stream="yes")),
    ("seed", chat(seed=-1)),
    ("top_logprobs", chat(logprobs=True, top_logprobs=21)),
    ("top_logprobs", chat(top_logprobs=2)),  # needs logprobs: true
    ("presence_penalty", chat(presence_penalty=0.5)),  # not supported: refused, not ignored
    ("stream_options", chat(stream_options={"include_usage": True})),  # only with stream
]
BAD_COMPLETION = [
    ("prompt", {"prompt": [1, 2, 100000]}),  # token id outside the vocabulary
    ("prompt", {"prompt": []}),
    ("prompt", {"prompt": 5}),
    ("logprobs", {"prompt": "x", "logprobs": 6}),
    ("echo", {"prompt": "x", "echo": True}),
    ("prompt", {"prompt": [[1, 2], []]}),
    ("n", {"prompt": ["a", "b", "c"], "n": 6}),  # 18 choices > max_n
]
RAW = [b'{"messages": [', b"not json at all", b"[1, 2, 3]", b"",
       b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
       b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}']


def test_bad_requests_get_400_with_openai_error_bodies_and_the_server_keeps_serving(serve):
    url, _ = serve(max_batch=2, kv_blocks=20, block_size=8)
    with httpx.Client(base_url=url, timeout=10) as http:
        cases = [("/v1/chat/completions", param, json.dumps(body).encode()) for param, body in BAD_CHAT]
        cases += [("/v1/completions", param, json.dumps(body).encode()) for param, body in BAD_COMPLETION]
        cases += [("/v1/chat/completions", None, raw) for raw in RAW]
        for path, param, raw in cases:
            r = http.post(path, content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (raw, r.text)
            error = r.json()["error"]
            assert set(error) == ERROR_KEYS and error["type"] == "invalid_request_error" and error["message"], raw
            if param is not None:
                assert error["param"] == param, (raw, error)
        assert http.get("/v1/nothing-here").json()["error"]["code"] == "not_found"
        ok = http.post("/v1/chat/completions", json=chat(max_tokens=3))
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1
    assert metric(url, "llmlab_kv_blocks_used") == 0 and metric(url, "llmlab_num_requests_waiting") == 0


def test_full_queue_answers_429_with_retry_after(serve):
    url, _ = serve(max_batch=1, max_waiting=1, kv_blocks=20, block_size=8, step_delay=0.01)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            return await asyncio.gather(*[http.post("/v1/chat/completions", json=chat(max_tokens=20, temperature=0))
                                          for _ in range(8)])

    answers = asyncio.run(burst())
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes and 429 in codes and set(codes) <= {200, 429}, codes
    for r in answers:
        if r.status_code == 429:
            assert r.headers["Retry-After"] == "1" and r.json()["error"]["type"] == "rate_limit_error"
    assert wait_for_metric(url, "llmlab_kv_blocks_used", 0) == 0


def test_a_client_that_disconnects_frees_its_kv_blocks_at_once(serve):
    url, _ = serve(max_batch=4, kv_blocks=40, block_size=8, step_delay=0.02)
    body = chat(max_tokens=100, temperature=0, stream=True)
    with httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            for _ in range(5):  # a few events in, then hang up
                next(lines)
            assert metric(url, "llmlab_kv_blocks_used") > 0 and metric(url, "llmlab_num_requests_running") == 1
        t0 = time.monotonic()
        assert wait_for_metric(url, "llmlab_kv_blocks_used", 0, timeout=5) == 0
        assert time.monotonic() - t0 < 1.0  # at once: 100 tokens would take 2 s more
        assert metric(url, "llmlab_num_requests_running") == 0
        # a non-streaming request whose client gives up is aborted too (noticed within a second)
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/chat/completions", json=chat(max_tokens=100, temperature=0), timeout=0.5)
        assert wait_for_metric(url, "llmlab_kv_blocks_used", 0, timeout=3) == 0
    text = httpx.get(url + "/metrics").text
    assert 'llmlab_request_success_total{finish_reason="abort"} 2' in text


def test_api_key_from_argument_or_environment(serve, monkeypatch):
    for api_key in ("sekrit", None):
        if api_key is None:
            monkeypatch.setenv("LLMLAB_API_KEY", "sekrit")
        url, _ = serve(api_key=api_key, max_batch=2, kv_blocks=20, block_size=8)
        with httpx.Client(base_url=url, timeout=10) as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekrit"}):
                r = http.post("/v1/chat/completions", json=chat(max_tokens=2), headers=headers)
                assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
                assert http.get("/v1/models", headers=headers).status_code == 401
            good = {"Authorization": "Bearer sekrit"}
            assert http.post("/v1/chat/completions", json=chat(max_tokens=2), headers=good).status_code == 200
            assert http.get("/health").status_code == 200 and http.get("/metrics").status_code == 200
            assert http.get("/").status_code == 200  # the page asks for the key itself


def test_graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones(serve, lm):
    url, app = serve(max_batch=4, kv_blocks=40, block_size=8, step_delay=0.02)
    runner = app.state.server.runner
    expected = lm.generate(lm.chat_ids(HI), 40, temperature=0, stop_ids=end_of_turn_ids(lm.tokenizer))
    got: dict = {}

    def in_flight():
        with httpx.Client(base_url=url, timeout=30) as http:
            got["answer"] = http.post("/v1/chat/completions", json=chat(max_tokens=40, temperature=0)).json()

    thread = threading.Thread(target=in_flight)
    thread.start()
    assert wait_for_metric(url, "llmlab_num_requests_running", 1) == 1
    runner.drain()
    refused = httpx.post(url + "/v1/chat/completions", json=chat(max_tokens=2), timeout=10)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "unavailable"
    assert httpx.get(url + "/health", timeout=10).status_code == 503
    thread.join(30)
    assert got["answer"]["usage"]["completion_tokens"] == len(expected)  # finished, not cut short
    runner.close(timeout=5)
    assert not runner._thread.is_alive()


def test_a_crashed_engine_answers_503_instead_of_hanging(serve):
    url, app = serve(max_batch=2, kv_blocks=20, block_size=8)
    engine = app.state.server.runner.engine

    def broken_step():
        raise RuntimeError("simulated engine failure")

    engine.step = broken_step
    r = httpx.post(url + "/v1/chat/completions", json=chat(max_tokens=5), timeout=10)
    assert r.status_code == 503 and set(r.json()["error"]) == ERROR_KEYS
    assert httpx.post(url + "/v1/chat/completions", json=chat(max_tokens=5), timeout=10).status_code == 503
    assert httpx.get(url + "/health", timeout=10).status_code == 503


def soak(serve, lm, n_requests: int, workers: int, seed: int) -> None:
    """Mixed requests from concurrent clients: good ones (checked against generate), bad ones, hang-ups."""
    url, _ = serve(max_batch=6, kv_blocks=48, block_size=8, max_waiting=64)
    rng = random.Random(seed)
    stops = end_of_turn_ids(lm.tokenizer)
    conversations = [[{"role": "user", "content": w}] for w in ("hi", "wrap the text", "Grüße 🙂", "naïve café")]
    completions = ["def wrap(text", "x", "the end"]
    expected_chat = {(i, n): "".join(stream_text(lm.generate(lm.chat_ids(m), n, temperature=0, stop_ids=stops),
                                                 lm.tokenizer)) for i, m in enumerate(conversations) for n in (8, 30)}
    expected_text = {(i, n): lm.generate(p, n, temperature=0) for i, p in enumerate(completions) for n in (8, 30)}
    plan = [rng.choice(["chat", "chat_stream", "text", "text_stream", "bad", "hang_up"]) for _ in range(n_requests)]
    plan = [(kind, rng.randrange(4), rng.choice((8, 30))) for kind in plan]

    def one(item) -> str:
        kind, i, n = item
        with httpx.Client(base_url=url, timeout=60) as http:
            if kind == "bad":
                r = http.post("/v1/chat/completions", json=chat(temperature=-1))
                assert r.status_code == 400
            elif kind == "hang_up":
                with http.stream("POST", "/v1/chat/completions", json=chat(max_tokens=60, stream=True)) as r:
                    next(r.iter_lines())
            elif kind.startswith("chat"):
                body = {"messages": conversations[i], "max_tokens": n, "temperature": 0}
                if kind == "chat":
                    text = http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
                else:
                    text = sse_text(http, "/v1/chat/completions", body)
                assert text == expected_chat[i, n], (kind, i, n)
            else:
                body = {"prompt": completions[i % 3], "max_tokens": n, "temperature": 0}
                if kind == "text":
                    text = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
                else:
                    text = sse_text(http, "/v1/completions", body)
                assert text == expected_text[i % 3, n], (kind, i, n)
        return kind

    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(one, plan, timeout=300))
    assert done == [kind for kind, _, _ in plan]
    assert wait_for_metric(url, "llmlab_kv_blocks_used", 0) == 0  # no block leaked
    assert metric(url, "llmlab_num_requests_running") == 0 and metric(url, "llmlab_num_requests_waiting") == 0


def sse_text(http: httpx.Client, path: str, body: dict) -> str:
    """The text of a streamed completion, parsed by hand from the server-sent events."""
    pieces, done = [], False
    with http.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ") and not done
            if line == "data: [DONE]":
                done = True
                continue
            for choice in json.loads(line[6:])["choices"]:
                pieces.append(choice["delta"].get("content") or "" if "delta" in choice else choice["text"])
    assert done
    return "".join(pieces)


def test_soak_small(serve, lm):
    soak(serve, lm, n_requests=48, workers=8, seed=0)


@pytest.mark.slow
def test_soak(serve, lm):
    soak(serve, lm, n_requests=300, workers=16, seed=1)
