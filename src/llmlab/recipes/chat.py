"""`llmlab chat`: a multi-turn conversation in the terminal, with a local model or a hosted API.

`--api local` (the default) loads `--model` with `llmlab.load` and renders each
turn with the model's own chat template; `--api openai` talks to any
OpenAI-compatible server (OpenAI, vLLM, llama.cpp's server, Ollama, `llmlab
serve`) and `--api anthropic` to Anthropic's Messages API, with `--model` the
API's model name, `--base-url` its address and the key from the environment
(OPENAI_API_KEY, ANTHROPIC_API_KEY or LLMLAB_API_KEY). All three go through
`llmlab.infer.clients`, and replies are streamed as they arrive.
Type /reset to forget the conversation, /exit (or Ctrl-D) to leave. `--say`
gives user turns up front and runs without a prompt, for scripts and tests.
"""

import sys
from dataclasses import dataclass

import torch

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, resolve_dtype
from llmlab.common.errors import UserError
from llmlab.infer.clients import APIS, Client, LocalClient, make_client
from llmlab.recipes.shared import RuntimeArgs, SamplingArgs


@dataclass
class ChatArgs(SamplingArgs, RuntimeArgs):
    model: str = arg("smollm2-135m-instruct", "local: alias, .gguf file, Hugging Face folder or hub id, or llmlab "
                                              "checkpoint with a chat template; openai/anthropic: the API's model "
                                              "name")
    api: str = arg("local", "local (an llmlab model), openai (any OpenAI-compatible server) or anthropic",
                   choices=list(APIS))
    base_url: str | None = arg(None, "the API's address, e.g. http://127.0.0.1:8000/v1 (default: OPENAI_BASE_URL "
                                     "or ANTHROPIC_BASE_URL, else the vendor's); keys come from OPENAI_API_KEY, "
                                     "ANTHROPIC_API_KEY or LLMLAB_API_KEY")
    device_map: str | None = arg(None, "spread a local model's layers over devices: auto, balanced, or "
                                       "'0:0-15,1:16-31,cpu:rest' (see llmlab.models.device_map)")
    system: str | None = arg(None, "system message (default: the template's own)")
    say: list[str] = arg([], "user turns to send, then exit (no prompt)")
    max_new_tokens: int = arg(256, "most tokens per reply")
    # a chat is steadier than free text: cooler sampling, and a mild push away from repeating itself
    temperature: float = arg(0.2, "0 is greedy; higher is more random")
    top_p: float | None = arg(0.9, "sample among the likeliest tokens holding this mass")
    repetition_penalty: float = arg(1.1, ">1 discourages tokens already present (local models only)")


def _user_turns(args: ChatArgs):
    if args.say:
        yield from args.say
        return
    while True:
        try:
            line = input("you> ")
        except EOFError:
            return
        if line.strip() == "/exit":
            return
        yield line


def make_chat_client(args: ChatArgs) -> Client:
    """The client `--api` names: a local model loaded here, or an API client (nothing is sent yet)."""
    import llmlab

    if args.api == "local":
        if args.base_url:
            raise UserError("--base-url: a local model has no address; drop it or pass --api openai/anthropic")
        if args.threads:
            torch.set_num_threads(args.threads)
        loaded = llmlab.load(args.model, device=resolve_device(args.device), dtype=resolve_dtype(args.dtype),
                             device_map=args.device_map)
        # a long conversation keeps its latest turns rather than failing
        return LocalClient(loaded, truncate=True, seed=args.seed, top_k=args.top_k, min_p=args.min_p,
                           repetition_penalty=args.repetition_penalty)
    if args.top_k is not None or args.min_p is not None or args.device_map:
        raise UserError(f"--top-k, --min-p and --device-map are for local models; --api {args.api} takes "
                        "--temperature, --top-p and --seed")
    return make_client(args.api, args.model, args.base_url)


def run(args: ChatArgs) -> list[dict[str, str]]:
    """Chat until the user leaves; return the conversation."""
    client = make_chat_client(args)
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    log.info(f"chatting with {client.name} ({args.api}); /reset forgets, /exit leaves")
    for text in _user_turns(args):
        if text.strip() == "/reset":
            messages = list(start)
            continue
        messages.append({"role": "user", "content": text})
        sys.stdout.write("assistant> ")
        pieces = []
        for piece in client.stream_chat(messages, args.max_new_tokens, temperature=args.temperature,
                                        top_p=args.top_p, seed=args.seed):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(pieces).strip()})
    return messages
