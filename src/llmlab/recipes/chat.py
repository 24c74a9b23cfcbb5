"""`llmlab chat`: a multi-turn conversation in the terminal, rendered with the model's own chat template.

Each turn re-renders the whole conversation and generates the assistant's reply,
streamed as it is chosen. Type /reset to forget the conversation, /exit (or
Ctrl-D) to leave. `--say` gives user turns up front and runs without a prompt,
for scripts and tests.
"""

import sys
from dataclasses import dataclass

import torch

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, resolve_dtype
from llmlab.recipes.shared import RuntimeArgs, SamplingArgs, sampling_kwargs


@dataclass
class ChatArgs(SamplingArgs, RuntimeArgs):
    model: str = arg("smollm2-135m-instruct", "alias, .gguf file, Hugging Face folder or hub id, or llmlab "
                                              "checkpoint with a chat template")
    system: str | None = arg(None, "system message (default: the template's own)")
    say: list[str] = arg([], "user turns to send, then exit (no prompt)")
    max_new_tokens: int = arg(256, "most tokens per reply")
    # a chat is steadier than free text: cooler sampling, and a mild push away from repeating itself
    temperature: float = arg(0.2, "0 is greedy; higher is more random")
    top_p: float | None = arg(0.9, "sample among the likeliest tokens holding this mass")
    repetition_penalty: float = arg(1.1, ">1 discourages tokens already present")


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


def run(args: ChatArgs) -> list[dict[str, str]]:
    """Chat until the user leaves; return the conversation."""
    import llmlab

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = llmlab.load(args.model, device=resolve_device(args.device), dtype=resolve_dtype(args.dtype))
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    log.info(f"chatting with {loaded.source}; /reset forgets, /exit leaves")
    for text in _user_turns(args):
        if text.strip() == "/reset":
            messages = list(start)
            continue
        messages.append({"role": "user", "content": text})
        ids = loaded.chat_ids(messages)
        sys.stdout.write("assistant> ")
        pieces = []
        for piece in loaded.stream(ids, args.max_new_tokens, text=True, truncate=True, **sampling_kwargs(args)):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(pieces).strip()})
    return messages
