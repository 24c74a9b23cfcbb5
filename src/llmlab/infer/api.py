"""Chat models behind one small interface: a local `Pretrained`, or an OpenAI-compatible endpoint.

Whatever only needs "messages in, reply text out" (a model-as-judge, a
comparison of two assistants) takes a `ChatModel`:

    judge.chat([{"role": "user", "content": "2+2?"}], max_new_tokens=16, temperature=0.0) -> "4"

- `LocalChat(lm)` renders the messages with the model's own chat template,
  generates (greedy at temperature 0) and stops at end of text or end of turn.
- `EndpointChat(model)` POSTs to `{base_url}/chat/completions` with the
  standard library only (urllib): a timeout on every request, retries with
  exponential backoff on 408/409/429/5xx and timeouts (honouring Retry-After),
  and one-line `UserError`s for what a user can fix (unreachable host, a
  rejected key, a wrong URL, an answer that is not a chat completion).

Base URL and key come from the arguments, else LLMLAB_API_BASE_URL /
LLMLAB_API_KEY, else OPENAI_BASE_URL / OPENAI_API_KEY; the base URL defaults
to OpenAI's. A key is optional: local servers (vLLM, llama.cpp's server)
usually take none. This file knows nothing about judging or scoring.
"""

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from tqdm import tqdm

from llmlab.common.constants import END_OF_TURN_TOKENS
from llmlab.common.errors import UserError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
Messages = list[dict[str, str]]


class ChatModel(Protocol):
    """Anything that answers a conversation with the assistant's next message."""

    def chat(self, messages: Messages, max_new_tokens: int = 256, temperature: float = 0.0) -> str: ...


def end_of_turn_ids(tokenizer) -> set[int]:
    """End-of-text and end-of-turn ids of this tokenizer: where a reply ends.

    A ChatML tokenizer with <|endoftext|>=256 and <|im_end|>=258 -> {256, 258}.
    """
    specials = tokenizer.special_tokens
    return ({tokenizer.eos_id} | {specials[s] for s in END_OF_TURN_TOKENS if s in specials}) - {None}


class LocalChat:
    """A `ChatModel` over a local `llmlab.infer.pretrained.Pretrained` (what `llmlab.load` returns).

    `truncate` keeps the last tokens of a prompt longer than the context window
    (its start, often the instructions, is lost); without it such a prompt raises.
    `seed` makes sampling at temperature > 0 repeatable (None: fresh randomness each call).
    """

    def __init__(self, lm, truncate: bool = False, seed: int | None = 0):
        self.lm, self.truncate, self.seed = lm, truncate, seed
        self.name = lm.source

    def chat(self, messages: Messages, max_new_tokens: int = 256, temperature: float = 0.0) -> str:
        stops = end_of_turn_ids(self.lm.tokenizer)
        ids = self.lm.generate(self.lm.chat_ids(messages), max_new_tokens, temperature=temperature, seed=self.seed,
                               stop_ids=stops, truncate=self.truncate)
        return self.lm.tokenizer.decode([t for t in ids if t not in stops])


def _setting(value: str | None, names: tuple[str, ...], default: str | None = None) -> str | None:
    """The argument if given, else the first environment variable that is set, else the default."""
    if value:
        return value
    return next((os.environ[n] for n in names if os.environ.get(n)), default)


class EndpointChat:
    """A `ChatModel` served by an OpenAI-compatible `/chat/completions` endpoint.

    `model` is the endpoint's model name; `timeout` bounds each request (seconds);
    a retryable failure is tried again up to `max_retries` times, waiting
    `backoff * 2**attempt` seconds (or the server's Retry-After, capped at 60).
    """

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep):
        if timeout <= 0 or max_retries < 0 or backoff < 0:
            raise ValueError(f"need timeout > 0, max_retries >= 0, backoff >= 0; got {timeout}, {max_retries}, "
                             f"{backoff}")
        self.name = model
        base = _setting(base_url, ("LLMLAB_API_BASE_URL", "OPENAI_BASE_URL"), DEFAULT_BASE_URL)
        self.url = base.rstrip("/") + "/chat/completions"
        self.api_key = _setting(api_key, ("LLMLAB_API_KEY", "OPENAI_API_KEY"))
        self.timeout, self.max_retries, self.backoff, self.sleep = timeout, max_retries, backoff, sleep

    def chat(self, messages: Messages, max_new_tokens: int = 256, temperature: float = 0.0) -> str:
        body = {"model": self.name, "messages": messages, "max_tokens": max_new_tokens, "temperature": temperature}
        return reply_text(self.post(body), self.url)

    def post(self, body: dict) -> dict:
        """POST `body` as JSON and return the decoded JSON answer, retrying what is worth retrying."""
        attempt = 0
        while True:
            try:
                return self._post_once(body)
            except _Retryable as e:
                if attempt == self.max_retries:
                    raise UserError(f"{self.url}: {e.reason} after {attempt + 1} attempt(s); try again later or "
                                    f"raise timeout / max_retries") from None
                self.sleep(min(60.0, e.retry_after if e.retry_after is not None else self.backoff * 2 ** attempt))
                attempt += 1

    def _post_once(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise _http_error(self.url, e) from None
        except TimeoutError:
            raise _Retryable(f"no answer within {self.timeout:g} s") from None
        except (ConnectionError, http.client.HTTPException) as e:
            raise _Retryable(f"the connection dropped ({type(e).__name__})") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _Retryable(f"no answer within {self.timeout:g} s") from None
            raise UserError(f"{self.url}: cannot reach the endpoint ({e.reason}); check base_url or "
                            f"OPENAI_BASE_URL") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{self.url}: the answer is not JSON ({raw[:80]!r}); is base_url an OpenAI-compatible "
                            f"API (usually ending in /v1)?") from None


class _Retryable(Exception):
    """A failure worth another try: a timeout, rate limit or server error."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


def _http_error(url: str, e: urllib.error.HTTPError) -> Exception:
    """The exception for an HTTP error status: `_Retryable` for 408/409/429/5xx, else a one-line `UserError`."""
    detail = _error_message(e.read())
    if e.code in RETRY_STATUS:
        retry_after = e.headers.get("Retry-After") if e.headers else None
        return _Retryable(f"HTTP {e.code} {detail}".strip(),
                          float(retry_after) if retry_after and retry_after.isdigit() else None)
    if e.code in (401, 403):
        return UserError(f"{url}: the API key was rejected (HTTP {e.code}: {detail}); set api_key or OPENAI_API_KEY")
    if e.code == 404:
        return UserError(f"{url}: not found (HTTP 404: {detail}); check base_url (usually ending in /v1) and the "
                         f"model name")
    return UserError(f"{url}: the request was refused (HTTP {e.code}: {detail})")


def _error_message(raw: bytes) -> str:
    """The `error.message` of an OpenAI-style error body, else its first 200 characters.

    b'{"error": {"message": "bad key"}}' -> "bad key".
    """
    text = raw.decode("utf-8", errors="replace")
    try:
        error = json.loads(text).get("error")
        return str(error.get("message", error) if isinstance(error, dict) else error or text[:200])
    except (json.JSONDecodeError, AttributeError):
        return text[:200]


def reply_text(answer: dict, url: str = "endpoint") -> str:
    """The assistant's text in a chat completion: answer["choices"][0]["message"]["content"].

    {"choices": [{"message": {"role": "assistant", "content": "4"}}]} -> "4"; a null content -> "".
    """
    try:
        return answer["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise UserError(f"{url}: the answer is not a chat completion ({json.dumps(answer)[:120]}); is it an "
                        f"OpenAI-compatible /chat/completions endpoint?") from None


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
