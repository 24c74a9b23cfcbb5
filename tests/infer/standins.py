"""Local stand-ins for hosted chat APIs: OpenAI's and Anthropic's wire formats, served on 127.0.0.1.

The real services cannot be reached from the test machine, so the clients are
tested against these. They are FastAPI apps served by uvicorn on a free port in
a background thread (the arena's `BackgroundServer`), and they are themselves checked against the official
`openai` and `anthropic` SDKs (tests/infer/test_clients.py), so a stand-in that
drifted from the real format would fail there first.

Both answer deterministically from the request: the reply is
"system=<system prompt> user=<last user message> turns=<n>" (or "prompt=<...>"
for completions), one "token" per word, cut at `max_tokens` words and before the
first stop string. `failures` is a list of (status, headers) answered, in turn,
before any success (429 rate limits, 503/529 overloads); `stream_error` makes a
stream break off with the API's in-stream error after its first piece.
`requests` records (path, headers, JSON body).
"""

import json
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from llmlab.eval.arena.server import BackgroundServer

OPENAI_ERRORS = {401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided"),
                 429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests"),
                 500: ("server_error", None, "The server had an error while processing your request"),
                 503: ("server_error", None, "The engine is currently overloaded, please try again later")}
ANTHROPIC_ERRORS = {400: ("invalid_request_error", "bad request"), 401: ("authentication_error", "invalid x-api-key"),
                    429: ("rate_limit_error", "Number of requests has exceeded your rate limit"),
                    500: ("api_error", "Internal server error"), 529: ("overloaded_error", "Overloaded")}


def reply_words(text: str, max_tokens: int, stop: list[str]) -> tuple[list[str], str, str | None]:
    """(pieces, why it ended: "stop" | "length" | "stop_sequence", the stop string hit) for a canned reply."""
    pieces = [w + " " for w in text.split(" ")]
    pieces[-1] = pieces[-1].rstrip()
    out, why, hit = [], "stop", None
    for piece in pieces:
        if len(out) == max_tokens:
            return out, "length", None
        joined = "".join(out) + piece
        found = [(joined.find(s), s) for s in stop if s in joined]
        if found:
            at, hit = min(found)
            cut = joined[:at][len("".join(out)):]
            return out + ([cut] if cut else []), "stop_sequence", hit
        out.append(piece)
    return out, why, hit


class StandIn:
    """A FastAPI app on 127.0.0.1:<free port> in a thread; `with StandIn(...) as s:` then `s.url`."""

    def __init__(self, api_key: str | None = None, failures=(), stream_error: bool = False):
        self.api_key, self.failures, self.stream_error = api_key, list(failures), stream_error
        self.requests: list[tuple[str, dict, dict]] = []
        self.app = FastAPI()
        self.routes()

    def routes(self) -> None:
        raise NotImplementedError

    async def record(self, request: Request) -> dict:
        body = await request.json()
        self.requests.append((request.url.path, {k.lower(): v for k, v in request.headers.items()}, body))
        return body

    def __enter__(self):
        self.background = BackgroundServer(self.app)
        self.base = self.background.__enter__()  # http://127.0.0.1:PORT
        return self

    def __exit__(self, *exc):
        self.background.__exit__(*exc)


def sse(data: dict | str, event: str | None = None) -> str:
    text = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


class OpenAIStandIn(StandIn):
    """POST /v1/chat/completions and /v1/completions, streamed or not, with OpenAI's error bodies."""

    @property
    def url(self) -> str:
        return self.base + "/v1"

    def error(self, status: int, headers: dict | None = None) -> JSONResponse:
        kind, code, message = OPENAI_ERRORS[status]
        return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}},
                            status_code=status, headers=headers)

    def routes(self) -> None:
        @self.app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await self.record(request)
            system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
            user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
            text = f"system={system or '-'} user={user} turns={len(body['messages'])}"
            return self.answer(request, body, text, chat=True)

        @self.app.post("/v1/completions")
        async def complete(request: Request):
            body = await self.record(request)
            return self.answer(request, body, f"prompt={body['prompt']}", chat=False)

    def answer(self, request: Request, body: dict, text: str, chat: bool):
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error(401)
        if self.failures:
            return self.error(*self.failures.pop(0))
        stop = body.get("stop") or []
        pieces, why, _ = reply_words(text, body.get("max_tokens") or 16, [stop] if isinstance(stop, str) else stop)
        finish = "length" if why == "length" else "stop"
        head = {"id": "chatcmpl-standin" if chat else "cmpl-standin", "created": int(time.time()),
                "model": body["model"]}
        usage = {"prompt_tokens": len(json.dumps(body).split()), "completion_tokens": len(pieces)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            choice = ({"message": {"role": "assistant", "content": "".join(pieces)}} if chat
                      else {"text": "".join(pieces)})
            return {**head, "object": "chat.completion" if chat else "text_completion",
                    "choices": [{"index": 0, **choice, "logprobs": None, "finish_reason": finish}], "usage": usage}
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(piece: str | None, finish_reason: str | None = None, first: bool = False) -> str:
            if chat:
                delta = {"role": "assistant", "content": ""} if first else {} if piece is None else {"content": piece}
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            else:
                choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish_reason}
            return sse({**head, "object": kind, "choices": [choice]})

        def events():
            if chat:
                yield chunk(None, first=True)
            for i, piece in enumerate(pieces):
                yield chunk(piece)
                if self.stream_error and i == 0:
                    yield sse({"error": {"message": "The server had an error", "type": "server_error"}})
                    return
            yield chunk(None, finish)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


class AnthropicStandIn(StandIn):
    """POST /v1/messages as Anthropic's Messages API answers it (2023-06-01), streamed or not."""

    @property
    def url(self) -> str:
        return self.base

    def error(self, status: int, headers: dict | None = None, message: str | None = None) -> JSONResponse:
        kind, default = ANTHROPIC_ERRORS[status]
        return JSONResponse({"type": "error", "error": {"type": kind, "message": message or default}},
                            status_code=status, headers={"request-id": "req_standin", **(headers or {})})

    def routes(self) -> None:
        @self.app.post("/v1/messages")
        async def messages(request: Request):
            body = await self.record(request)
            # the API documents x-api-key; the SDK (anthropic 2.x) sends the same key as a bearer token
            keys = {request.headers.get("x-api-key"), request.headers.get("authorization", "").removeprefix("Bearer ")}
            if self.api_key and self.api_key not in keys:
                return self.error(401)
            if "anthropic-version" not in request.headers:
                return self.error(400, message="anthropic-version: header is required")
            if not isinstance(body.get("max_tokens"), int):
                return self.error(400, message="max_tokens: Field required")
            if any(m.get("role") not in ("user", "assistant") for m in body["messages"]):
                return self.error(400, message="messages: roles must be user or assistant")
            if self.failures:
                return self.error(*self.failures.pop(0))
            system = body.get("system") or "-"
            user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
            text = f"system={system} user={user} turns={len(body['messages'])}"
            pieces, why, hit = reply_words(text, body["max_tokens"], body.get("stop_sequences") or [])
            stop_reason = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}[why]
            usage = {"input_tokens": len(json.dumps(body["messages"]).split()), "output_tokens": len(pieces)}
            message = {"id": "msg_standin", "type": "message", "role": "assistant", "model": body["model"]}
            if not body.get("stream"):
                return {**message, "content": [{"type": "text", "text": "".join(pieces)}], "stop_reason": stop_reason,
                        "stop_sequence": hit, "usage": usage}
            return StreamingResponse(self.events(message, pieces, stop_reason, hit, usage),
                                     media_type="text/event-stream")

    def events(self, message: dict, pieces: list[str], stop_reason: str, hit: str | None, usage: dict):
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1}}
        yield sse({"type": "message_start", "message": start}, "message_start")
        yield sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                  "content_block_start")
        yield sse({"type": "ping"}, "ping")
        for i, piece in enumerate(pieces):
            yield sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                      "content_block_delta")
            if self.stream_error and i == 0:
                yield sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")
                return
        yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        yield sse({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": hit},
                   "usage": {"output_tokens": usage["output_tokens"]}}, "message_delta")
        yield sse({"type": "message_stop"}, "message_stop")
