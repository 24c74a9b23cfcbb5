"""One interface to a chat model, wherever it runs: a local llmlab model, any OpenAI-compatible API, Anthropic.

    client = make_client("openai", "gpt-4o-mini")            # or "anthropic", or "local" with a loaded model
    client.chat([{"role": "user", "content": "2+2?"}], max_tokens=16) -> "4"
    for piece in client.stream_chat(messages, temperature=0.7, seed=1): ...
    client.complete("The capital of France is", max_tokens=4) -> " Paris."

Every backend takes the same sampling keywords: `max_tokens` (llmlab's own
name `max_new_tokens` is accepted too, so these clients are `ChatModel`s for
the judge), `temperature` (default 0: greedy, repeatable), `top_p`, `stop`
(strings; the reply ends before the first one) and `seed`.

- `LocalClient(lm)`: a `Pretrained` from `llmlab.load`. Chat renders the
  model's own chat template and ends at end of text or end of turn; streams
  come from `llmlab.infer.generate.stream`, one decoded piece per token.
- `OpenAIClient(model)`: POST {base}/chat/completions and {base}/completions,
  streamed as server-sent events ending in `data: [DONE]`. OpenAI itself,
  vLLM, llama.cpp's server, Ollama (http://localhost:11434/v1) and
  `llmlab serve` all speak it. Settings: base URL from the argument, else
  LLMLAB_API_BASE_URL, else OPENAI_BASE_URL, else OpenAI's; key from the
  argument, else LLMLAB_API_KEY, else OPENAI_API_KEY (local servers take none).
- `AnthropicClient(model)`: POST {base}/v1/messages (Messages API, version
  2023-06-01): system messages go to the top-level `system` field, the reply
  is the text of its content blocks, a stream is the events message_start,
  content_block_start, content_block_delta (text_delta), content_block_stop,
  message_delta, message_stop (and ping, error). Base URL: argument, else
  LLMLAB_API_BASE_URL, else ANTHROPIC_BASE_URL, else https://api.anthropic.com;
  key: argument, else LLMLAB_API_KEY, else ANTHROPIC_API_KEY. The Messages API
  has no plain completion and no seed: `complete` raises, a seed is ignored with a warning.

HTTP (timeouts, retries with backoff on 429/5xx, one-line errors) is
`llmlab.infer.endpoint`'s. This file never loads a model: `llmlab.load` sits
above `infer`, so `make_client("local", ...)` takes a loaded model or a `load` function.
"""

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from tqdm import tqdm

from llmlab.common import log
from llmlab.common.constants import CHAT_ROLES, END_OF_TURN_TOKENS
from llmlab.common.errors import UserError
from llmlab.infer.endpoint import Endpoint

OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
APIS = ("local", "openai", "anthropic")
Messages = list[dict[str, str]]


class ChatModel(Protocol):
    """Anything that answers a conversation with the assistant's next message (what the judge needs)."""

    def chat(self, messages: Messages, max_new_tokens: int = 256, temperature: float = 0.0) -> str: ...


@dataclass
class Sampling:
    """The sampling settings every backend understands, checked once."""

    max_tokens: int = 256
    temperature: float = 0.0  # greedy: a judge or a test wants the same answer twice
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @classmethod
    def of(cls, max_tokens: int | None = None, *, max_new_tokens: int | None = None, temperature: float = 0.0,
           top_p: float | None = None, stop: str | list[str] | None = None, seed: int | None = None) -> "Sampling":
        if max_tokens is not None and max_new_tokens is not None and max_tokens != max_new_tokens:
            raise UserError(f"max_tokens={max_tokens} and max_new_tokens={max_new_tokens} disagree; give one")
        n = max_tokens if max_tokens is not None else max_new_tokens if max_new_tokens is not None else 256
        if n < 1:
            raise UserError(f"max_tokens must be at least 1, got {n}")
        if not temperature >= 0:  # also catches NaN
            raise UserError(f"temperature must be 0 or more, got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {top_p}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if not all(isinstance(s, str) and s for s in stops):
            raise UserError(f"stop must be non-empty strings, got {stops!r}")
        return cls(int(n), float(temperature), top_p, stops, seed)


def check_messages(messages: Messages) -> None:
    """A conversation is a non-empty list of {"role": one of CHAT_ROLES, "content": text}."""
    if not messages:
        raise UserError("messages: the conversation is empty; give at least one user message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in CHAT_ROLES or not isinstance(m.get("content"), str):
            raise UserError(f"message {i}: expected {{'role': one of {', '.join(CHAT_ROLES)}, 'content': text}}, "
                            f"got {m!r:.80}")


def cut_at_stop(text: str, stop: list[str]) -> str:
    """Text up to the first stop string. cut_at_stop("a\\nUser: b", ["User:"]) -> "a\\n"."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[:min(hits)] if hits else text


class Client:
    """The interface: `chat`, `stream_chat`, `complete`, `stream_complete`; backends fill in the `_` methods."""

    name: str

    def chat(self, messages: Messages, max_tokens: int | None = None, **sampling) -> str:
        check_messages(messages)
        return self._chat(messages, Sampling.of(max_tokens, **sampling))

    def stream_chat(self, messages: Messages, max_tokens: int | None = None, **sampling) -> Iterator[str]:
        check_messages(messages)
        return self._stream_chat(messages, Sampling.of(max_tokens, **sampling))

    def complete(self, prompt: str, max_tokens: int | None = None, **sampling) -> str:
        return self._complete(prompt, Sampling.of(max_tokens, **sampling))

    def stream_complete(self, prompt: str, max_tokens: int | None = None, **sampling) -> Iterator[str]:
        return self._stream_complete(prompt, Sampling.of(max_tokens, **sampling))

    def _chat(self, messages: Messages, s: Sampling) -> str:
        return "".join(self._stream_chat(messages, s))

    def _complete(self, prompt: str, s: Sampling) -> str:
        return "".join(self._stream_complete(prompt, s))

    def _stream_chat(self, messages: Messages, s: Sampling) -> Iterator[str]:
        raise NotImplementedError

    def _stream_complete(self, prompt: str, s: Sampling) -> Iterator[str]:
        raise NotImplementedError


def end_of_turn_ids(tokenizer) -> set[int]:
    """End-of-text and end-of-turn ids of this tokenizer: where a reply ends.

    A ChatML tokenizer with <|endoftext|>=256 and <|im_end|>=258 -> {256, 258}.
    """
    specials = tokenizer.special_tokens
    return ({tokenizer.eos_id} | {specials[s] for s in END_OF_TURN_TOKENS if s in specials}) - {None}


class LocalClient(Client):
    """A local `llmlab.infer.pretrained.Pretrained`.

    `truncate` keeps the last tokens of a prompt longer than the context window (its start, often the
    instructions, is lost); without it such a prompt raises. `seed` is the default for calls that give
    none (None: fresh randomness each call). `top_k`, `min_p`, `repetition_penalty` are local-only knobs.
    A non-streamed reply is one `generate` call decoded at once; a stream decodes token by token.
    """

    def __init__(self, lm, truncate: bool = False, seed: int | None = 0, *, top_k: int | None = None,
                 min_p: float | None = None, repetition_penalty: float = 1.0):
        self.lm, self.truncate, self.seed = lm, truncate, seed
        self.name = lm.source
        self.extra = {"top_k": top_k, "min_p": min_p, "repetition_penalty": repetition_penalty}

    def _kwargs(self, s: Sampling) -> dict:
        return dict(temperature=s.temperature, top_p=s.top_p, seed=self.seed if s.seed is None else s.seed,
                    truncate=self.truncate, **self.extra)

    def _text(self, ids: list[int], s: Sampling) -> str:
        specials = set(self.lm.tokenizer.special_tokens.values())
        return cut_at_stop(self.lm.tokenizer.decode([t for t in ids if t not in specials]), s.stop)

    def _chat(self, messages: Messages, s: Sampling) -> str:
        stops = end_of_turn_ids(self.lm.tokenizer)
        return self._text(self.lm.generate(self.lm.chat_ids(messages), s.max_tokens, stop_ids=stops,
                                           **self._kwargs(s)), s)

    def _stream_chat(self, messages: Messages, s: Sampling) -> Iterator[str]:
        stops = end_of_turn_ids(self.lm.tokenizer)
        return self.lm.stream(self.lm.chat_ids(messages), s.max_tokens, text=True, stop=s.stop, stop_ids=stops,
                              **self._kwargs(s))

    def _complete(self, prompt: str, s: Sampling) -> str:
        return self._text(self.lm.generate(self.lm.encode(prompt), s.max_tokens, **self._kwargs(s)), s)

    def _stream_complete(self, prompt: str, s: Sampling) -> Iterator[str]:
        return self.lm.stream(self.lm.encode(prompt), s.max_tokens, text=True, stop=s.stop, **self._kwargs(s))


def _setting(value: str | None, names: tuple[str, ...], default: str | None = None) -> str | None:
    """The argument if given, else the first environment variable that is set, else the default."""
    if value:
        return value
    return next((os.environ[n] for n in names if os.environ.get(n)), default)


def _loads(data: str, url: str) -> dict:
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise UserError(f"{url}: a stream event is not JSON ({data[:80]!r}); is this an OpenAI/Anthropic API?"
                        ) from None


class OpenAIClient(Client):
    """An OpenAI-compatible API. `model` is the server's model name; `timeout` bounds each request (s);
    a retryable failure is tried up to `max_retries` more times (see `llmlab.infer.endpoint`)."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.name = model
        self.base_url = _setting(base_url, ("LLMLAB_API_BASE_URL", "OPENAI_BASE_URL"), OPENAI_BASE_URL).rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.api_key = _setting(api_key, ("LLMLAB_API_KEY", "OPENAI_API_KEY"))
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.http = Endpoint(headers, timeout=timeout, max_retries=max_retries, backoff=backoff, sleep=sleep,
                             key_env="OPENAI_API_KEY", url_env="OPENAI_BASE_URL")

    def _body(self, s: Sampling, **fields) -> dict:
        body = {"model": self.name, **fields, "max_tokens": s.max_tokens, "temperature": s.temperature}
        body.update({k: v for k, v in (("top_p", s.top_p), ("stop", s.stop), ("seed", s.seed)) if v})
        return body

    def _chat(self, messages: Messages, s: Sampling) -> str:
        return reply_text(self.http.post(self.url, self._body(s, messages=messages)), self.url)

    def _complete(self, prompt: str, s: Sampling) -> str:
        url = self.base_url + "/completions"
        answer = self.http.post(url, self._body(s, prompt=prompt))
        try:
            return answer["choices"][0]["text"] or ""
        except (KeyError, IndexError, TypeError):
            raise UserError(f"{url}: the answer is not a text completion ({str(answer)[:120]}); is it an "
                            f"OpenAI-compatible /completions endpoint?") from None

    def _stream_chat(self, messages: Messages, s: Sampling) -> Iterator[str]:
        return self._pieces(self.url, self._body(s, messages=messages, stream=True),
                            lambda choice: (choice.get("delta") or {}).get("content"))

    def _stream_complete(self, prompt: str, s: Sampling) -> Iterator[str]:
        return self._pieces(self.base_url + "/completions", self._body(s, prompt=prompt, stream=True),
                            lambda choice: choice.get("text"))

    def _pieces(self, url: str, body: dict, piece: Callable[[dict], str | None]) -> Iterator[str]:
        """Text pieces of an OpenAI stream: `data: {chunk}` events until `data: [DONE]`."""
        for _, data in self.http.stream(url, body):
            if data.strip() == "[DONE]":
                return
            chunk = _loads(data, url)
            if chunk.get("error"):
                error = chunk["error"]
                raise UserError(f"{url}: the stream ended with an error: "
                                f"{error.get('message', error) if isinstance(error, dict) else error}")
            for choice in chunk.get("choices") or []:  # a usage-only chunk has none
                text = piece(choice)
                if text:
                    yield text


def reply_text(answer: dict, url: str = "endpoint") -> str:
    """The assistant's text in a chat completion: answer["choices"][0]["message"]["content"].

    {"choices": [{"message": {"role": "assistant", "content": "4"}}]} -> "4"; a null content -> "".
    """
    try:
        return answer["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise UserError(f"{url}: the answer is not a chat completion ({str(answer)[:120]}); is it an "
                        f"OpenAI-compatible /chat/completions endpoint?") from None


class AnthropicClient(Client):
    """Anthropic's Messages API. Arguments as for `OpenAIClient`; `base_url` may end in /v1 or not."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.name = model
        base = _setting(base_url, ("LLMLAB_API_BASE_URL", "ANTHROPIC_BASE_URL"), ANTHROPIC_BASE_URL).rstrip("/")
        self.url = base.removesuffix("/v1") + "/v1/messages"
        self.api_key = _setting(api_key, ("LLMLAB_API_KEY", "ANTHROPIC_API_KEY"))
        headers = {"anthropic-version": ANTHROPIC_VERSION, **({"x-api-key": self.api_key} if self.api_key else {})}
        self.http = Endpoint(headers, timeout=timeout, max_retries=max_retries, backoff=backoff, sleep=sleep,
                             key_env="ANTHROPIC_API_KEY", url_env="ANTHROPIC_BASE_URL")

    def _body(self, messages: Messages, s: Sampling, stream: bool) -> dict:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [m for m in messages if m["role"] != "system"]
        if not turns or any(m["role"] not in ("user", "assistant") for m in turns):
            raise UserError("messages: Anthropic's Messages API takes user and assistant turns (and system "
                            "messages, sent as `system`); give at least one user message and no tool roles")
        if s.seed is not None:
            log.info("warning: Anthropic's Messages API has no seed; the seed is ignored")
        body = {"model": self.name, "max_tokens": s.max_tokens, "messages": turns, "temperature": s.temperature}
        body.update({k: v for k, v in (("system", system), ("top_p", s.top_p), ("stop_sequences", s.stop)) if v})
        return {**body, "stream": True} if stream else body

    def _chat(self, messages: Messages, s: Sampling) -> str:
        answer = self.http.post(self.url, self._body(messages, s, stream=False))
        blocks = answer.get("content") if isinstance(answer, dict) else None
        if not isinstance(blocks, list) or answer.get("type") != "message":
            raise UserError(f"{self.url}: the answer is not a Messages API message ({str(answer)[:120]}); "
                            f"is base_url Anthropic's API?")
        return "".join(b.get("text", "") for b in blocks if b.get("type") == "text")

    def _stream_chat(self, messages: Messages, s: Sampling) -> Iterator[str]:
        for event, data in self.http.stream(self.url, self._body(messages, s, stream=True)):
            payload = _loads(data, self.url)
            kind = payload.get("type", event)
            if kind == "error":
                error = payload.get("error") or {}
                raise UserError(f"{self.url}: the stream ended with {error.get('type', 'an error')}: "
                                f"{error.get('message', '')}; try again")
            if kind == "content_block_delta" and payload["delta"].get("type") == "text_delta":
                yield payload["delta"]["text"]
            elif kind == "message_stop":
                return

    def _stream_complete(self, prompt: str, s: Sampling) -> Iterator[str]:
        raise UserError("anthropic: the Messages API has no plain-text completion; use chat (or --api openai "
                        "with a server that offers /v1/completions)")


def make_client(api: str, model, base_url: str | None = None, api_key: str | None = None, *,
                load: Callable[[str], object] | None = None, **options) -> Client:
    """A client for `api` ("local", "openai" or "anthropic").

    For "local", `model` is a loaded `Pretrained`, or a name that `load` (e.g. `llmlab.load`) opens; options
    go to `LocalClient`. For the others `model` is the API's model name and options (timeout, max_retries,
    backoff) go to the HTTP client.
    """
    if api == "local":
        if base_url or api_key:
            raise UserError("a local model takes no base_url or api_key; drop them or pick --api openai/anthropic")
        if isinstance(model, str):
            if load is None:
                raise ValueError("make_client('local', name) needs load= (e.g. llmlab.load) to open the model")
            model = load(model)
        return LocalClient(model, **options)
    if api == "openai":
        return OpenAIClient(model, base_url, api_key, **options)
    if api == "anthropic":
        return AnthropicClient(model, base_url, api_key, **options)
    raise UserError(f"api {api!r}: unknown; choose one of {', '.join(APIS)}")


def chat_all(model: ChatModel, conversations: list[Messages], max_new_tokens: int = 256, temperature: float = 0.0,
             workers: int = 1, progress: bool = False) -> list[str]:
    """Replies to many conversations, in order; `workers` > 1 sends that many at once (for endpoints)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")

    def one(messages: Messages) -> str:
        return model.chat(messages, max_new_tokens=max_new_tokens, temperature=temperature)

    bar = dict(total=len(conversations), desc="chat", disable=not progress)
    if workers == 1:
        return [one(m) for m in tqdm(conversations, **bar)]
    with ThreadPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(one, conversations), **bar))
