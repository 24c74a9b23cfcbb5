"""One client interface over a local model, OpenAI-compatible servers and Anthropic's Messages API.

The hosted backends run against the stand-ins in `standins.py` (127.0.0.1 only:
the real services cannot be reached from here). Each stand-in is first held to
the official SDK (`openai`, `anthropic`): the SDK must parse its answers, streams
and errors, and our client must read the same text the SDK reads.
"""

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import anthropic
import openai
import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.infer.clients import (
    AnthropicClient,
    LocalClient,
    OpenAIClient,
    Sampling,
    chat_all,
    end_of_turn_ids,
    make_client,
)
from llmlab.infer.endpoint import retry_after_seconds, sse_events
from tests.infer.standins import AnthropicStandIn, OpenAIStandIn

CONVERSATION = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"},
                {"role": "assistant", "content": "hi"}, {"role": "user", "content": "what is two plus two"}]


def recorder():
    sleeps = []
    return sleeps, sleeps.append


# ---- OpenAI-compatible ---------------------------------------------------------------------------------------


def test_openai_chat_matches_the_sdk():
    with OpenAIStandIn(api_key="sk-test") as server:
        sdk = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
        ours = OpenAIClient("standin-1", server.url, "sk-test")
        expected = sdk.chat.completions.create(model="standin-1", messages=CONVERSATION, max_tokens=5,
                                               temperature=0).choices[0].message.content
        assert ours.chat(CONVERSATION, max_tokens=5) == expected == "system=be brief user=what is two "
        streamed = sdk.chat.completions.create(model="standin-1", messages=CONVERSATION, max_tokens=50, stream=True,
                                               stop=["plus"])
        sdk_pieces = [c.choices[0].delta.content for c in streamed if c.choices and c.choices[0].delta.content]
        pieces = list(ours.stream_chat(CONVERSATION, max_tokens=50, stop=["plus"], seed=3, top_p=0.5))
        assert pieces == sdk_pieces and "".join(pieces) == "system=be brief user=what is two "
    path, headers, body = server.requests[-1]
    assert path == "/v1/chat/completions" and headers["authorization"] == "Bearer sk-test"
    assert body == {"model": "standin-1", "messages": CONVERSATION, "max_tokens": 50, "temperature": 0.0,
                    "top_p": 0.5, "stop": ["plus"], "seed": 3, "stream": True}


def test_openai_completions_match_the_sdk():
    with OpenAIStandIn() as server:
        sdk = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
        ours = OpenAIClient("standin-1", server.url, "none")
        expected = sdk.completions.create(model="standin-1", prompt="Once upon a time", max_tokens=3).choices[0].text
        assert ours.complete("Once upon a time", max_tokens=3) == expected == "prompt=Once upon a "
        sdk_text = "".join(c.choices[0].text for c in sdk.completions.create(
            model="standin-1", prompt="Once upon a time", max_tokens=9, stream=True))
        assert "".join(ours.stream_complete("Once upon a time", max_tokens=9)) == sdk_text == "prompt=Once upon a time"
    assert server.requests[-1][0] == "/v1/completions"


def test_openai_errors_read_like_the_sdk():
    with OpenAIStandIn(api_key="sk-right") as server:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url, api_key="sk-wrong", max_retries=0).chat.completions.create(
                model="m", messages=CONVERSATION)
        with pytest.raises(UserError, match=r"API key was rejected \(HTTP 401: Incorrect API key.*OPENAI_API_KEY"):
            OpenAIClient("m", server.url, "sk-wrong").chat(CONVERSATION)
    with OpenAIStandIn(stream_error=True) as server:
        sdk = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0)
        with pytest.raises(openai.APIError, match="The server had an error"):
            list(sdk.chat.completions.create(model="m", messages=CONVERSATION, stream=True))
        stream = OpenAIClient("m", server.url, "k").stream_chat(CONVERSATION)
        assert next(stream) == "system=be "  # text already sent stays sent; then the error, in one line
        with pytest.raises(UserError, match="stream ended with an error: The server had an error"):
            next(stream)


def test_openai_retries_rate_limits_and_overloads_then_succeeds():
    failures = [(429, {"Retry-After": "2"}), (503, None)]
    with OpenAIStandIn(failures=list(failures)) as server:  # the SDK retries the same answers
        sdk = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(model="m", messages=CONVERSATION)
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(model="m", messages=CONVERSATION)
    with OpenAIStandIn(failures=list(failures)) as server:
        sleeps, sleep = recorder()
        client = OpenAIClient("m", server.url, "k", backoff=0.25, sleep=sleep)
        assert "".join(client.stream_chat(CONVERSATION, max_tokens=2)) == "system=be brief "
    assert sleeps == [2.0, 0.5] and len(server.requests) == 3  # Retry-After, then backoff * 2**1


# ---- Anthropic -----------------------------------------------------------------------------------------------


def test_anthropic_messages_match_the_sdk():
    with AnthropicStandIn(api_key="sk-ant") as server:
        sdk = anthropic.Anthropic(base_url=server.url, api_key="sk-ant", max_retries=0)
        ours = AnthropicClient("claude-standin", server.url, "sk-ant")
        message = sdk.messages.create(model="claude-standin", max_tokens=6, system="be brief",
                                      messages=CONVERSATION[1:], stop_sequences=["two"])
        assert message.stop_reason == "stop_sequence" and message.stop_sequence == "two"
        assert ours.chat(CONVERSATION, max_tokens=6, stop="two") == message.content[0].text
        assert message.content[0].text == "system=be brief user=what is "
        with sdk.messages.stream(model="claude-standin", max_tokens=40, system="be brief",
                                 messages=CONVERSATION[1:]) as stream:
            sdk_pieces = list(stream.text_stream)
            final = stream.get_final_message()
        assert final.stop_reason == "end_turn" and final.content[0].text == "".join(sdk_pieces)
        assert list(ours.stream_chat(CONVERSATION, max_tokens=40, top_p=0.9)) == sdk_pieces
        assert "".join(sdk_pieces) == "system=be brief user=what is two plus two turns=3"
    path, headers, body = server.requests[-1]
    assert path == "/v1/messages" and headers["x-api-key"] == "sk-ant" and headers["anthropic-version"] == "2023-06-01"
    assert body == {"model": "claude-standin", "max_tokens": 40, "messages": CONVERSATION[1:], "system": "be brief",
                    "temperature": 0.0, "top_p": 0.9, "stream": True}


@pytest.mark.parametrize("status, sdk_error, ours", [
    (401, anthropic.AuthenticationError, r"API key was rejected \(HTTP 401: invalid x-api-key\).*ANTHROPIC_API_KEY"),
    (429, anthropic.RateLimitError, r"HTTP 429 Number of requests has exceeded your rate limit after 2 attempt"),
    (529, anthropic.OverloadedError, r"HTTP 529 Overloaded after 2 attempt"),
    (500, anthropic.InternalServerError, r"HTTP 500 Internal server error after 2 attempt"),
])
def test_anthropic_errors_read_like_the_sdk(status, sdk_error, ours):
    with AnthropicStandIn(failures=[(status, {"retry-after": "1"})] * 4) as server:
        with pytest.raises(sdk_error) as info:
            anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0).messages.create(
                model="m", max_tokens=4, messages=CONVERSATION[1:])
        assert info.value.status_code == status and info.value.body["error"]["type"]
        sleeps, sleep = recorder()
        with pytest.raises(UserError, match=ours) as raised:
            AnthropicClient("m", server.url, "k", max_retries=1, sleep=sleep).chat(CONVERSATION)
    assert "\n" not in str(raised.value)
    assert sleeps == ([] if status == 401 else [1.0])  # 401 is not retried; the others wait Retry-After


def test_anthropic_retries_then_succeeds_and_bounds_attempts():
    with AnthropicStandIn(failures=[(429, {"retry-after": "3"}), (529, None)]) as server:
        sleeps, sleep = recorder()
        client = AnthropicClient("m", server.url + "/v1", "k", backoff=0.5, sleep=sleep)  # a trailing /v1 is fine
        assert client.chat(CONVERSATION, max_new_tokens=2) == "system=be brief "
    assert sleeps == [3.0, 1.0] and len(server.requests) == 3
    with AnthropicStandIn(failures=[(529, None)] * 10) as server:
        sleeps, sleep = recorder()
        with pytest.raises(UserError, match=r"HTTP 529 Overloaded after 4 attempt\(s\)"):
            AnthropicClient("m", server.url, "k", max_retries=3, backoff=1.0, sleep=sleep).chat(CONVERSATION)
    assert sleeps == [1.0, 2.0, 4.0] and len(server.requests) == 4


def test_anthropic_stream_error_event():
    with AnthropicStandIn(stream_error=True) as server:
        sdk = anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0)
        with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
            with sdk.messages.stream(model="m", max_tokens=9, messages=CONVERSATION[1:]) as stream:
                list(stream.text_stream)
        pieces = AnthropicClient("m", server.url, "k").stream_chat(CONVERSATION)
        assert next(pieces) == "system=be "
        with pytest.raises(UserError, match="stream ended with overloaded_error: Overloaded"):
            next(pieces)


def test_anthropic_settings_from_the_environment(monkeypatch):
    monkeypatch.delenv("LLMLAB_API_KEY", raising=False)
    monkeypatch.delenv("LLMLAB_API_BASE_URL", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-env")
    with AnthropicStandIn(api_key="sk-env") as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        client = AnthropicClient("m")
        assert client.url == server.url + "/v1/messages" and client.chat(CONVERSATION, max_tokens=1) == "system=be "
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    assert AnthropicClient("m").url == "https://api.anthropic.com/v1/messages"
    monkeypatch.setenv("LLMLAB_API_KEY", "sk-llmlab")
    assert AnthropicClient("m").api_key == "sk-llmlab"


def test_anthropic_refuses_what_its_api_lacks():
    client = AnthropicClient("m", "http://127.0.0.1:9", "k")
    with pytest.raises(UserError, match="no plain-text completion"):
        client.complete("hi")
    with pytest.raises(UserError, match="user and assistant turns"):
        client.chat([{"role": "system", "content": "only a system prompt"}])
    with pytest.raises(UserError, match="user and assistant turns"):
        client.chat([{"role": "tool", "content": "x"}])


# ---- the shared interface ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    (dict(temperature=math.nan), "temperature"), (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(max_tokens=0), "max_tokens"),
    (dict(max_tokens=4, max_new_tokens=5), "disagree"), (dict(stop=[""]), "stop"),
])
def test_bad_sampling_is_one_line(bad, message):
    with pytest.raises(UserError, match=message):
        Sampling.of(**bad)
    with pytest.raises(TypeError):
        Sampling.of(top_k=3)  # not part of the shared interface


def test_bad_messages_and_unknown_api():
    client = OpenAIClient("m", "http://127.0.0.1:9", "k")
    for messages in ([], [{"role": "robot", "content": "x"}], [{"role": "user", "content": 3}], ["hi"]):
        with pytest.raises(UserError, match="message"):
            client.chat(messages)
    with pytest.raises(UserError, match="unknown; choose one of local, openai, anthropic"):
        make_client("gemini", "m")
    with pytest.raises(UserError, match="no base_url"):
        make_client("local", "tiny", base_url="http://x")


def test_sse_and_retry_after_parsing():
    lines = ["event: ping", "data: {}", "", ": keep-alive", "data: a", "data:b", "", "data: [DONE]"]
    assert list(sse_events(lines)) == [("ping", "{}"), ("message", "a\nb"), ("message", "[DONE]")]
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_seconds({}) is None and retry_after_seconds({"Retry-After": "soon"}) is None


def tiny_lm():
    from llmlab.infer.pretrained import Pretrained
    from llmlab.models import Transformer, get_preset
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train("some text and more text " * 100, 300,
                          special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=tok.vocab_size, seq_len=256))
    return Pretrained(model.eval(), tok, "tiny")


def test_local_client_streams_what_it_returns():
    lm = tiny_lm()
    client = make_client("local", "tiny", load=lambda name: lm)
    messages = [{"role": "user", "content": "some text"}]
    reply = client.chat(messages, max_tokens=12)
    assert "".join(client.stream_chat(messages, max_tokens=12)) == reply
    assert reply == lm.generate(lm.chat_ids(messages), 12, temperature=0.0, stop_ids=end_of_turn_ids(lm.tokenizer),
                               text=True)
    text = client.complete("some text", max_tokens=10)
    assert text == lm.generate("some text", 10, temperature=0.0)
    assert "".join(client.stream_complete("some text", max_tokens=10)) == text
    stop = text[3:6]  # a stop string the reply contains: both paths cut before it
    assert len(stop) == 3
    assert client.complete("some text", max_tokens=10, stop=[stop]) == text[:text.find(stop)]
    assert "".join(client.stream_complete("some text", max_tokens=10, stop=stop)) == text[:text.find(stop)]
    warm = dict(max_tokens=10, temperature=1.5, seed=7)
    assert client.complete("some", **warm) == client.complete("some", **warm)  # a seed repeats a sample
    assert chat_all(client, [messages, messages], max_new_tokens=12) == [reply, reply]  # the judge's protocol



def test_the_judge_grades_through_a_hosted_client():
    from llmlab.eval.judge import grade_answers

    with AnthropicStandIn() as server:
        grades = grade_answers(AnthropicClient("judge", server.url, "k"), ["2+2?"], ["4"], max_new_tokens=3)
    assert grades[0].raw == "system=You are a " and grades[0].score is None
    body = server.requests[0][2]
    assert body["max_tokens"] == 3 and body["temperature"] == 0.0 and body["system"].startswith("You are a careful")


def test_chat_recipe_with_a_hosted_api(monkeypatch, capsys):
    from llmlab.recipes.chat import ChatArgs, run

    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/reset\nagain please\n"))
    with AnthropicStandIn() as server:
        messages = run(ChatArgs(api="anthropic", base_url=server.url, model="claude-standin", system="sys",
                                max_new_tokens=20))
    assert messages == [{"role": "system", "content": "sys"}, {"role": "user", "content": "again please"},
                        {"role": "assistant", "content": "system=sys user=again please turns=1"}]
    assert "assistant> system=sys user=hello turns=1" in capsys.readouterr().out
    assert server.requests[0][2]["temperature"] == 0.2 and server.requests[0][2]["top_p"] == 0.9
    with pytest.raises(UserError, match="--top-k, --min-p and --device-map are for local models"):
        run(ChatArgs(api="openai", base_url="http://127.0.0.1:9/v1", top_k=5))


def test_chat_command_pipes_stdin_to_an_api():
    root = Path(__file__).resolve().parents[2]
    with OpenAIStandIn(api_key="sk-pipe") as server:
        env = {**os.environ, "OPENAI_API_KEY": "sk-pipe", "OMP_NUM_THREADS": "1"}
        env.pop("LLMLAB_API_KEY", None)
        done = subprocess.run([sys.executable, "-m", "llmlab.cli", "chat", "--api", "openai", "--base-url", server.url,
                               "--model", "standin-1", "--temperature", "0"], input="hi there\n", env=env, cwd=root,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "assistant> system=- user=hi there turns=1" in done.stdout
        failed = subprocess.run([sys.executable, "-m", "llmlab.cli", "chat", "--api", "openai", "--base-url",
                                 server.url], input="hi\n", env={**env, "OPENAI_API_KEY": "sk-wrong"}, cwd=root,
                                capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "API key was rejected" in failed.stderr and "Traceback" not in failed.stderr


def test_openai_client_against_llmlab_serve():
    from llmlab.eval.arena.server import BackgroundServer
    from llmlab.serve import create_app

    lm = tiny_lm()
    local = LocalClient(lm)
    messages = [{"role": "system", "content": "more"}, {"role": "user", "content": "some text"}]
    with BackgroundServer(create_app(lm, api_key="sk-serve", name="tiny")) as url:
        served = OpenAIClient("tiny", url + "/v1", "sk-serve")
        reply = local.chat(messages, max_tokens=12)
        assert served.chat(messages, max_tokens=12) == reply == "".join(served.stream_chat(messages, max_tokens=12))
        text = local.complete("some text", max_tokens=10)
        assert served.complete("some text", max_tokens=10) == text
        assert "".join(served.stream_complete("some text", max_tokens=10)) == text
        with pytest.raises(UserError, match="API key was rejected"):
            OpenAIClient("tiny", url + "/v1", "sk-wrong").chat(messages)
