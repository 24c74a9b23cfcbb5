"""`llmlab serve`: an OpenAI-compatible server and a web chat page for one model, until Ctrl-C.

    llmlab serve --model smollm2-135m-instruct --port 8000 [--api-key KEY]
    -> http://127.0.0.1:8000/      the chat page
       http://127.0.0.1:8000/v1    for any OpenAI client (base_url), e.g. openai.OpenAI(base_url=..., api_key=KEY)

It binds to 127.0.0.1 unless told otherwise. Ctrl-C shuts down gracefully: no new connections, in-flight
requests finish (for up to --shutdown-timeout seconds), then the engine stops.
"""

from dataclasses import dataclass

import uvicorn

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, resolve_dtype
from llmlab.common.errors import UserError
from llmlab.eval.arena.server import bind, url_of
from llmlab.recipes.shared import RuntimeArgs
from llmlab.serve import create_app


@dataclass
class ServeArgs(RuntimeArgs):
    model: str = arg("smollm2-135m-instruct", "llmlab checkpoint or run folder, Hugging Face folder or hub id, "
                                              ".gguf file, or an alias")
    name: str | None = arg(None, "model name the API reports (default: --model)")
    host: str = arg("127.0.0.1", "address to listen on; anything but 127.0.0.1 exposes the server to other machines")
    port: int = arg(8000, "port to listen on; 0 picks a free one (the URL is printed)")
    api_key: str | None = arg(None, "require 'Authorization: Bearer KEY' on /v1 (default: $LLMLAB_API_KEY if set)")
    max_batch: int = arg(16, "most requests generated together")
    kv_blocks: int | None = arg(None, "KV cache blocks in the pool (default: enough for max_batch full contexts, "
                                      "at most 1 GiB)")
    block_size: int = arg(16, "tokens per KV cache block")
    prefill_chunk: int = arg(256, "most prompt tokens prefilled per step, so long prompts do not stall decoding")
    max_waiting: int = arg(256, "queued requests before new ones get 429")
    max_n: int = arg(16, "most choices (n) per request")
    request_timeout: float = arg(600.0, "seconds any request may take")
    shutdown_timeout: float = arg(30.0, "seconds in-flight requests get to finish after Ctrl-C")


def run(args: ServeArgs) -> None:
    import torch

    import llmlab

    for flag in ("max_batch", "block_size", "prefill_chunk", "max_waiting", "max_n"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be at least 1")
    if args.kv_blocks is not None and args.kv_blocks < 2:
        raise UserError(f"--kv-blocks {args.kv_blocks}: need at least 2 (one is kept free)")
    if args.request_timeout <= 0 or args.shutdown_timeout < 0:
        raise UserError("--request-timeout must be above 0 and --shutdown-timeout at least 0")
    if not 0 <= args.port < 65536:
        raise UserError(f"--port {args.port}: must be 0..65535")
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = llmlab.load(args.model, device=resolve_device(args.device), dtype=resolve_dtype(args.dtype))
    app = create_app(loaded, api_key=args.api_key, name=args.name or args.model, max_batch=args.max_batch,
                     kv_blocks=args.kv_blocks, block_size=args.block_size, prefill_chunk=args.prefill_chunk,
                     max_waiting=args.max_waiting, max_n=args.max_n, request_timeout=args.request_timeout,
                     shutdown_timeout=args.shutdown_timeout)
    try:
        sock = bind(args.host, args.port)
    except OSError as e:
        raise UserError(f"--host/--port: {e}") from None
    url = url_of(sock)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.info(f"serve: listening on {args.host}, reachable from other machines")
    secured = "needs an API key" if app.state.needs_api_key else "no API key"
    log.info(f"serve: open {url}/ for the chat page; OpenAI base_url {url}/v1 ({secured}); Ctrl-C stops")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                           timeout_graceful_shutdown=max(1, round(args.shutdown_timeout))))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down cleanly, then raises the signal again for the caller
        pass
    finally:
        sock.close()
    log.info("serve: stopped")
