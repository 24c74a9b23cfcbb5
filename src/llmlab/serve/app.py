"""The OpenAI-compatible HTTP server: FastAPI routes over one continuously batching engine.

    POST /v1/chat/completions   chat, rendered with the model's own chat template
    POST /v1/completions        plain continuation of a prompt (text or token ids, one or several)
    GET  /v1/models             the one model served
    GET  /health                200 while serving, 503 while shutting down
    GET  /metrics               Prometheus text: queue, running, KV blocks, tokens/s, TTFT and inter-token latency
    GET  /                      the web chat page (static/, plain HTML and JS, nothing fetched from elsewhere)

Both generation routes answer at once (JSON) or stream server-sent events
(`data: {chunk}\\n\\n` ... `data: [DONE]\\n\\n`), with OpenAI's meaning for every
parameter and OpenAI's error body for every mistake (see `protocol`). A
request with `n` choices is `n` engine requests (seeds seed, seed+1, ... when a
seed is given). Greedy output (temperature 0) equals `llmlab.infer.generate` on
the same prompt, because the engine guarantees it per request.

Robustness, where it happens: bad parameters -> 400 before anything runs; a
full engine queue -> 429 with Retry-After; shutdown -> 503 with Retry-After
while in-flight requests finish; a client that disconnects -> its engine
requests are aborted at once (their KV blocks freed); every wait is bounded by
`request_timeout`. With an API key (argument or LLMLAB_API_KEY) the /v1 routes
need `Authorization: Bearer KEY`; the page, /health and /metrics stay open.
"""

import asyncio
import json
import os
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from llmlab.common.errors import UserError
from llmlab.infer.api import end_of_turn_ids
from llmlab.infer.engine import Engine, QueueFull, SamplingParams
from llmlab.serve.protocol import APIError, ChatRequest, CompletionRequest, parse
from llmlab.serve.runner import Draining, EngineRunner
from llmlab.serve.text import ChoiceText, CompletionLogprobs, chat_logprob

STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = "1"  # an overloaded engine usually frees a slot within a second
DISCONNECT_POLL_S = 1.0  # how often a non-streaming request checks that its client is still there


@dataclass
class _Choice:
    index: int
    request_id: str
    prompt: int  # which prompt this choice continues
    text: ChoiceText
    logprobs: list | CompletionLogprobs | None
    finish_reason: str | None = None
    completion_tokens: int = 0


class _Generation:
    """The engine requests behind one HTTP request: submit them, follow their events, abort what is left."""

    def __init__(self, server: "_Server", request: Request, prompts: list[list[int]], params: SamplingParams,
                 body, chat: bool):
        self.server, self.request, self.prompts, self.chat = server, request, prompts, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.events: asyncio.Queue = asyncio.Queue()
        self.deadline = time.monotonic() + server.request_timeout
        self.choices: list[_Choice] = []
        self.params: list[SamplingParams] = []
        tok, silent = server.tokenizer, set(server.tokenizer.special_tokens.values()) | set(params.stop_token_ids)
        for p in range(len(prompts)):
            for i in range(body.n):
                index = p * body.n + i
                logprobs = None if params.logprobs is None else [] if chat else CompletionLogprobs(tok)
                self.choices.append(_Choice(index, f"{self.id}-{index}", p, ChoiceText(tok, body.stop_strings(),
                                                                                        silent), logprobs))
                seed = None if params.seed is None else params.seed + i
                self.params.append(SamplingParams(**{**vars(params), "seed": seed}))
        self.by_id = {c.request_id: c for c in self.choices}

    async def start(self) -> None:
        """Submit every choice; on any refusal abort those already in and raise the matching APIError."""
        runner = self.server.runner
        try:
            for choice, params in zip(self.choices, self.params, strict=True):
                await runner.submit(choice.request_id, self.prompts[choice.prompt], params, self.events)
        except QueueFull:
            self.abort()
            raise APIError(429, "the server is at capacity; retry shortly", code="rate_limit_exceeded",
                           type="rate_limit_error", headers={"Retry-After": RETRY_AFTER_S}) from None
        except (Draining, TimeoutError):
            self.abort()
            raise APIError(503, "the server is shutting down or not ready; retry shortly", type="server_error",
                           code="unavailable", headers={"Retry-After": RETRY_AFTER_S}) from None
        except ValueError as e:
            self.abort()
            raise APIError(400, str(e), param="messages" if self.chat else "prompt") from None

    def abort(self) -> None:
        for c in self.choices:
            if c.finish_reason is None:
                self.server.runner.abort(c.request_id)

    async def follow(self, watch_disconnect: bool):
        """Yield (choice, new text, logprob entry or None, finished now) until every choice has finished."""
        left = len(self.choices)
        last_check = time.monotonic()
        while left:
            now = time.monotonic()
            if now > self.deadline:
                raise APIError(504, f"the request took longer than {self.server.request_timeout:g} s",
                               type="server_error", code="timeout")
            if watch_disconnect and now - last_check > DISCONNECT_POLL_S:
                last_check = now
                if await self.request.is_disconnected():
                    raise asyncio.CancelledError("the client disconnected")
            try:
                async with asyncio.timeout(min(DISCONNECT_POLL_S, self.deadline - now)):
                    ev = await self.events.get()
            except TimeoutError:
                continue
            choice = self.by_id.get(ev.request_id)
            if choice is None or choice.finish_reason is not None:
                continue  # a stop string already ended it
            piece, entry = "", None
            if ev.token_id is not None:
                choice.completion_tokens = ev.completion_tokens
                piece = choice.text.feed(ev.token_id)
                # every generated token has its logprobs (a special token too: no text, as vLLM's
                # skip_special_tokens), except the stop token that ends the choice, as OpenAI's
                ends_here = ev.finish_reason == "stop" and ev.token_id in choice.text.silent
                if choice.logprobs is not None and not ends_here:
                    if self.chat:
                        entry = chat_logprob(self.server.tokenizer, ev)
                        choice.logprobs.append(entry)
                    else:
                        entry = choice.logprobs.add(ev)
            if choice.text.stopped:
                choice.finish_reason = "stop"
                if not ev.finished:
                    self.server.runner.abort(choice.request_id)
            elif ev.finished:
                piece += choice.text.finish()
                choice.finish_reason = ev.finish_reason
                if ev.finish_reason == "abort":
                    raise APIError(503, "the server stopped this request while shutting down", type="server_error",
                                   code="unavailable", headers={"Retry-After": RETRY_AFTER_S})
            if choice.finish_reason is not None:
                left -= 1
            yield choice, piece, entry, choice.finish_reason is not None

    def usage(self) -> dict:
        prompt = sum(len(p) for p in self.prompts)
        completion = sum(c.completion_tokens for c in self.choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def head(self) -> dict:
        return {"id": self.id, "object": ("chat.completion" if self.chat else "text_completion"),
                "created": self.created, "model": self.server.name}

    def completion(self) -> dict:
        """The whole answer, once every choice has finished."""
        if self.chat:
            choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text.text},
                        "logprobs": None if c.logprobs is None else {"content": c.logprobs},
                        "finish_reason": c.finish_reason} for c in self.choices]
        else:
            choices = [{"index": c.index, "text": c.text.text,
                        "logprobs": None if c.logprobs is None else c.logprobs.as_dict(),
                        "finish_reason": c.finish_reason} for c in self.choices]
        return {**self.head(), "choices": choices, "usage": self.usage()}

    def chunk(self, choice: _Choice, piece: str, entry, finished: bool, include_usage: bool) -> dict:
        """One streamed chunk: a choice's new text (and logprobs), or its finish reason."""
        reason = choice.finish_reason if finished else None
        if self.chat:
            delta = {"content": piece} if piece or not finished else {}
            out = {"index": choice.index, "delta": delta, "finish_reason": reason,
                   "logprobs": {"content": [entry]} if entry is not None else None}
        else:
            out = {"index": choice.index, "text": piece, "finish_reason": reason, "logprobs": entry}
        chunk = {**self.head(), "object": "chat.completion.chunk" if self.chat else "text_completion",
                 "choices": [out]}
        return {**chunk, "usage": None} if include_usage else chunk

    async def stream(self, include_usage: bool):
        """Server-sent events for the whole generation; aborts every unfinished choice if the client goes."""
        try:
            if self.chat:  # OpenAI opens each choice with its role
                for c in self.choices:
                    first = {**self.head(), "object": "chat.completion.chunk", "choices": [
                        {"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None}]}
                    yield _sse({**first, "usage": None} if include_usage else first)
            async for choice, piece, entry, finished in self.follow(watch_disconnect=False):
                if piece or entry is not None or finished:
                    if piece or entry is not None:
                        yield _sse(self.chunk(choice, piece, entry, False, include_usage))
                    if finished:
                        yield _sse(self.chunk(choice, "", None, True, include_usage))
            if include_usage:
                yield _sse({**self.head(), "object": "chat.completion.chunk" if self.chat else "text_completion",
                            "choices": [], "usage": self.usage()})
            yield "data: [DONE]\n\n"
        except APIError as e:  # the status line is gone; the error travels as an event, as OpenAI does
            yield _sse(e.body())
        finally:
            self.abort()


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class _Server:
    """What the routes share: the model, its tokenizer, the engine runner, the limits."""

    def __init__(self, pretrained, runner: EngineRunner, name: str, max_n: int, request_timeout: float):
        self.pretrained, self.tokenizer, self.runner = pretrained, pretrained.tokenizer, runner
        self.name, self.max_n, self.request_timeout = name, max_n, request_timeout
        self.seq_len = pretrained.model.config.seq_len
        self.vocab_size = pretrained.model.config.vocab_size
        self.created = int(time.time())

    def sampling(self, body, prompts: list[list[int]], param: str, stop_ids: set[int], default_new: int | None
                 ) -> SamplingParams:
        """Engine sampling parameters, after checking the lengths against the context window."""
        n_choices = body.n * len(prompts)
        if n_choices > self.max_n:
            raise APIError(400, f"n: at most {self.max_n} choices per request (n x prompts = {n_choices})", "n")
        longest = max(len(p) for p in prompts)
        room = self.seq_len - longest
        if min(len(p) for p in prompts) == 0:
            raise APIError(400, f"{param}: the prompt has no tokens", param)
        if room < 1:
            raise APIError(400, f"{param}: the prompt is {longest} tokens, but this model's context window is "
                                f"{self.seq_len} tokens and needs room for at least one new token; shorten it",
                           param, code="context_length_exceeded")
        new = body.new_tokens()
        key = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) is not None else "max_tokens"
        if new is None:
            new = room if default_new is None else min(default_new, room)
        elif new > room:
            raise APIError(400, f"{key}: {longest} prompt tokens + {new} new tokens exceed this model's context "
                                f"window of {self.seq_len} tokens; ask for at most {room}", key,
                           code="context_length_exceeded")
        return SamplingParams(max_tokens=new, temperature=1.0 if body.temperature is None else body.temperature,
                              top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed,
                              stop_token_ids=frozenset() if body.ignore_eos else frozenset(stop_ids),
                              logprobs=body.engine_logprobs())

    def chat_prompt(self, body: ChatRequest) -> list[int]:
        try:
            return self.pretrained.chat_ids([m.as_dict() for m in body.messages])
        except UserError as e:
            raise APIError(400, f"messages: {e}", "messages") from None

    def completion_prompts(self, body: CompletionRequest) -> list[list[int]]:
        prompts = []
        for i, p in enumerate(body.prompts()):
            if isinstance(p, str):
                prompts.append(self.pretrained.encode(p))
                continue
            bad = [t for t in p if not 0 <= t < self.vocab_size]
            if bad:
                raise APIError(400, f"prompt: token id {bad[0]} (prompt {i}) is outside the vocabulary "
                                    f"(0..{self.vocab_size - 1})", "prompt")
            prompts.append(list(p))
        return prompts


def _resolve_key(api_key: str | None) -> str | None:
    key = api_key if api_key is not None else os.environ.get("LLMLAB_API_KEY")
    return key or None


def create_app(pretrained, *, api_key: str | None = None, name: str | None = None, max_batch: int = 16,
               kv_blocks: int | None = None, block_size: int = 16, prefill_chunk: int = 256, max_waiting: int = 256,
               max_n: int = 16, request_timeout: float = 600.0, shutdown_timeout: float = 30.0) -> FastAPI:
    """The server for a loaded model (`llmlab.load(...)`); serve it with uvicorn.

    api_key: required as `Authorization: Bearer KEY` on /v1 routes (None: LLMLAB_API_KEY if set; "": none).
    max_batch, kv_blocks, block_size, prefill_chunk, max_waiting: the engine's (see `llmlab.infer.engine`).
    max_n: most choices one request may ask for. request_timeout: seconds any request may take.
    shutdown_timeout: seconds in-flight requests get to finish when the server stops.
    """
    if pretrained.tokenizer is None:
        raise UserError(f"{pretrained.source}: has no tokenizer; the server needs one to read and write text")
    if pretrained.classes is not None:
        raise UserError(f"{pretrained.source}: has a classification head, not a language-model head; "
                        f"it cannot generate text")
    if max_n < 1 or request_timeout <= 0 or shutdown_timeout < 0:
        raise ValueError(f"need max_n >= 1, request_timeout > 0, shutdown_timeout >= 0; got {max_n}, "
                         f"{request_timeout}, {shutdown_timeout}")
    engine = Engine(pretrained.model.eval(), block_size=block_size, kv_blocks=kv_blocks, max_batch=max_batch,
                    prefill_chunk=prefill_chunk, max_waiting=max_waiting)
    server = _Server(pretrained, EngineRunner(engine), name or pretrained.source, max_n, request_timeout)
    key = _resolve_key(api_key)
    chat_stops = end_of_turn_ids(pretrained.tokenizer)
    text_stops = {pretrained.tokenizer.eos_id} - {None}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.runner.start()
        yield
        await asyncio.to_thread(server.runner.close, shutdown_timeout)

    app = FastAPI(title="llmlab serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.state.needs_api_key = key is not None

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        error = APIError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None)
        return JSONResponse(error.body(), status_code=e.status_code, headers=e.headers)

    def authorize(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "missing or incorrect API key; send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def generate(gen: _Generation, body):
        await gen.start()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(gen.stream(include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            async for _ in gen.follow(watch_disconnect=True):
                pass
        finally:
            gen.abort()
        return JSONResponse(gen.completion())

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        body = parse(ChatRequest, await request.body())
        prompts = [server.chat_prompt(body)]
        params = server.sampling(body, prompts, "messages", chat_stops, default_new=None)
        gen = _Generation(server, request, prompts, params, body, chat=True)
        return await generate(gen, body)

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        body = parse(CompletionRequest, await request.body())
        prompts = server.completion_prompts(body)
        params = server.sampling(body, prompts, "prompt", text_stops, default_new=16)  # OpenAI's default: 16
        gen = _Generation(server, request, prompts, params, body, chat=False)
        return await generate(gen, body)

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": server.created,
                                            "owned_by": "llmlab", "max_model_len": server.seq_len}]}

    @app.get("/health")
    async def health():
        if not server.runner.alive:
            raise APIError(503, "shutting down", type="server_error", code="unavailable",
                           headers={"Retry-After": RETRY_AFTER_S})
        return {"status": "ok", "model": server.name, "needs_api_key": key is not None}

    @app.get("/metrics")
    async def metrics():
        text = server.runner.metrics.render(server.runner.snapshot)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
