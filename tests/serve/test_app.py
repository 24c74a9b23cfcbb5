"""The server through the official `openai` client, unchanged but for base_url: answers equal llmlab's own
generation (greedy, and seeded sampling), usage counts, n, logprobs against the model's own log-softmax,
stop strings, streaming, and OpenAI's error shapes."""

import codecs

import httpx
import openai
import pytest
import torch

from llmlab.infer.api import end_of_turn_ids
from llmlab.infer.text import stream_text
from llmlab.serve.text import ChoiceText
from tests.serve.conftest import wait_for_metric

CONVERSATIONS = [[{"role": "user", "content": "Hello"}],
                 [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüße 🙂"},
                  {"role": "assistant", "content": "ok"}, {"role": "user", "content": "wrap the text"}]]


def client(url: str, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0, timeout=30,
                         **kwargs)


def reference_chat(lm, messages, max_tokens, **kwargs) -> tuple[str, list[int]]:
    """(reply text, new token ids) from llmlab's generate, with the chat template and end-of-turn stops."""
    stops = end_of_turn_ids(lm.tokenizer)
    ids = lm.generate(lm.chat_ids(messages), max_tokens, stop_ids=stops, **kwargs)
    return "".join(stream_text(ids, lm.tokenizer)), ids


def test_greedy_chat_equals_generate_with_exact_usage(serve, lm):
    url, _ = serve(max_batch=4, kv_blocks=40, block_size=8)
    c = client(url)
    for messages in CONVERSATIONS:
        text, ids = reference_chat(lm, messages, 40, temperature=0)
        r = c.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=40, temperature=0)
        assert r.choices[0].message.content == text and r.choices[0].message.role == "assistant"
        assert r.choices[0].finish_reason == ("stop" if ids[-1] in end_of_turn_ids(lm.tokenizer) else "length")
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(lm.chat_ids(messages)), len(ids))
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        assert r.model == "tiny-chat" and r.object == "chat.completion" and r.id.startswith("chatcmpl-")

        stream = c.chat.completions.create(model="tiny-chat", messages=messages, max_completion_tokens=40,
                                           temperature=0, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == [
            r.choices[0].finish_reason]
        assert chunks[-1].choices == [] and chunks[-1].usage == r.usage  # the usage chunk comes last
    assert [m.id for m in c.models.list()] == ["tiny-chat"]
    assert wait_for_metric(url, "llmlab_kv_blocks_used", 0) == 0


def test_greedy_completions_equal_generate_for_text_ids_and_lists(serve, lm):
    url, _ = serve(max_batch=4, kv_blocks=40, block_size=8)
    c = client(url)
    prompts = ["def wrap(text", "naïve café", "x"]
    expected = [lm.generate(p, 30, temperature=0) for p in prompts]
    r = c.completions.create(model="tiny-chat", prompt="def wrap(text", max_tokens=30, temperature=0)
    assert r.choices[0].text == expected[0] and r.object == "text_completion"
    assert r.usage.prompt_tokens == len(lm.encode("def wrap(text"))
    ids = lm.encode("naïve café")
    r = c.completions.create(model="tiny-chat", prompt=ids, max_tokens=30, temperature=0)
    assert r.choices[0].text == expected[1] and r.usage.prompt_tokens == len(ids)
    r = c.completions.create(model="tiny-chat", prompt=prompts, max_tokens=30, temperature=0, n=2)
    assert [ch.index for ch in r.choices] == list(range(6))
    assert [ch.text for ch in r.choices] == [e for e in expected for _ in range(2)]  # prompt-major, as OpenAI
    assert r.usage.prompt_tokens == sum(len(lm.encode(p)) for p in prompts)
    streamed = {}
    for chunk in c.completions.create(model="tiny-chat", prompt=prompts, max_tokens=30, temperature=0, stream=True):
        for ch in chunk.choices:
            streamed[ch.index] = streamed.get(ch.index, "") + ch.text
    assert [streamed[i] for i in range(3)] == expected
    default = c.completions.create(model="tiny-chat", prompt="x", temperature=0)
    assert default.usage.completion_tokens <= 16  # OpenAI's default max_tokens for completions
    full = c.completions.create(model="tiny-chat", prompt="x", max_tokens=40, temperature=0,
                                extra_body={"ignore_eos": True})  # vLLM's extension, for load tests
    assert full.usage.completion_tokens == 40
    assert full.choices[0].text == "".join(stream_text(lm.generate("x", 40, temperature=0, eos_id=None,
                                                                   text=False), lm.tokenizer))
    # past an end-of-text token (10th here) every token still streams its logprobs, as load tests count them
    reference = lm.generate("naïve café", 40, temperature=0, eos_id=None, text=False)
    assert set(reference) & set(lm.tokenizer.special_tokens.values())
    tokens, text = [], ""
    for chunk in c.completions.create(model="tiny-chat", prompt="naïve café", max_tokens=40, temperature=0,
                                      logprobs=0, stream=True, extra_body={"ignore_eos": True}):
        for ch in chunk.choices:
            text += ch.text
            tokens += ch.logprobs.tokens if ch.logprobs else []
    assert len(tokens) == 40 and text == "".join(stream_text(reference, lm.tokenizer))


def test_seeded_choices_equal_generate_with_seed_plus_i(serve, lm):
    url, _ = serve(max_batch=4, kv_blocks=40, block_size=8)
    messages = CONVERSATIONS[0]
    r = client(url).chat.completions.create(model="tiny-chat", messages=messages, max_tokens=25, temperature=0.9,
                                            top_p=0.9, seed=7, n=3)
    got = [ch.message.content for ch in sorted(r.choices, key=lambda ch: ch.index)]
    assert got == [reference_chat(lm, messages, 25, temperature=0.9, top_p=0.9, seed=7 + i)[0] for i in range(3)]
    assert len(set(got)) > 1  # different seeds, different samples
    assert r.usage.completion_tokens == sum(len(reference_chat(lm, messages, 25, temperature=0.9, top_p=0.9,
                                                               seed=7 + i)[1]) for i in range(3))


def model_logprobs(lm, prompt: list[int], new: list[int]) -> torch.Tensor:
    """log_softmax of the model's logits at each new token's position: (len(new), V), by a plain forward."""
    with torch.inference_mode():
        logits = lm.model(torch.tensor([prompt + new]))[0, len(prompt) - 1:-1]
    return logits.float().log_softmax(-1)


def test_logprobs_match_the_models_own_distribution(serve, lm):
    url, _ = serve(max_batch=4, kv_blocks=40, block_size=8)
    c = client(url)
    messages = CONVERSATIONS[1]
    _, ids = reference_chat(lm, messages, 12, temperature=0)
    r = c.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=12, temperature=0, logprobs=True,
                                  top_logprobs=3)
    content = r.choices[0].logprobs.content
    stops = end_of_turn_ids(lm.tokenizer)
    shown = [t for t in ids if t not in stops]  # the end-of-turn token is not text
    expected = model_logprobs(lm, lm.chat_ids(messages), ids)
    assert len(content) == len(shown)
    for i, (entry, token) in enumerate(zip(content, shown, strict=True)):
        assert bytes(entry.bytes) == lm.tokenizer.decode_bytes([token])
        assert entry.logprob == pytest.approx(expected[i, token].item(), abs=1e-4)
        top = expected[i].topk(3)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(top.values.tolist(), abs=1e-4)
        assert [bytes(t.bytes) for t in entry.top_logprobs] == [lm.tokenizer.decode_bytes([j]) for j in
                                                                top.indices.tolist()]
    plain = c.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=12, temperature=0)
    assert plain.choices[0].logprobs is None

    prompt = lm.encode("def wrap(text")
    new = lm.generate(prompt, 10, temperature=0, eos_id=None)
    r = c.completions.create(model="tiny-chat", prompt="def wrap(text", max_tokens=10, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    expected = model_logprobs(lm, prompt, new)
    assert lp.token_logprobs == pytest.approx([expected[i, t].item() for i, t in enumerate(new)], abs=1e-4)
    assert all(len(top) <= 2 and max(top.values()) == pytest.approx(expected[i].max().item(), abs=1e-4)
               for i, top in enumerate(lp.top_logprobs))
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    streamed = [chunk.choices[0].logprobs for chunk in c.completions.create(
        model="tiny-chat", prompt="def wrap(text", max_tokens=10, temperature=0, logprobs=2, stream=True)
        if chunk.choices and chunk.choices[0].logprobs]
    assert [x for s in streamed for x in s.token_logprobs] == pytest.approx(lp.token_logprobs, abs=1e-4)


def test_stop_strings_cut_the_text_and_end_the_request(serve, lm):
    url, _ = serve(max_batch=4, kv_blocks=40, block_size=8)
    c = client(url)
    full = lm.generate("def wrap(text", 60, temperature=0)
    stop = full[20:23]
    cut = full[:full.find(stop)]
    r = c.completions.create(model="tiny-chat", prompt="def wrap(text", max_tokens=60, temperature=0,
                             stop=["never-there", stop])
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 60  # the engine request ended at the stop string
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="tiny-chat", prompt="def wrap(text", max_tokens=60, temperature=0, stop=stop, stream=True)
        if ch.choices)
    assert streamed == cut
    assert wait_for_metric(url, "llmlab_kv_blocks_used", 0) == 0


def test_choice_text_matches_stream_text_on_split_characters_and_stops(lm):
    """The push-style decoder against infer.text's pull-style one, on byte-by-byte tokens of multi-byte text."""
    tok = lm.tokenizer
    byte_ids = {tok.decode_bytes([i]): i for i in range(256)}
    text = "Grüße 🙂 naïve café 日本語 the end"
    ids = [byte_ids[bytes([b])] for b in text.encode("utf-8")]
    for stops in ([], ["café"], ["🙂"], ["日本語 x", "end"], ["e"]):
        choice = ChoiceText(tok, stops, set(tok.special_tokens.values()))
        pieces = [choice.feed(t) for t in ids] + [choice.finish()]
        assert "".join(pieces) == "".join(stream_text(ids, tok, stop=stops))
        assert all("\ufffd" not in p for p in pieces)  # no half character is ever sent
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    assert ChoiceText(tok, [], set()).finish() == utf8.decode(b"", final=True) == ""


def test_errors_have_openai_shapes_in_the_client(serve):
    url, _ = serve(api_key="sekrit", max_batch=2, kv_blocks=20, block_size=8)
    with pytest.raises(openai.AuthenticationError) as e:
        client(url, api_key="wrong").models.list()
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    c = client(url, api_key="sekrit")
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hi"}], temperature=3)
    assert e.value.body["param"] == "temperature" and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=500)
    assert e.value.body["code"] == "context_length_exceeded" and "at most" in e.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        c.with_options(base_url=url + "/v2").models.list()
    assert c.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hi"}],
                                     max_tokens=2).usage.completion_tokens >= 1
    assert httpx.get(url + "/health").json()["needs_api_key"] is True
