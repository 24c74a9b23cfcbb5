"""`llmlab chat`: a multi-turn conversation in the terminal, rendered with the model's own chat template.

Each turn re-renders the whole conversation and generates the assistant's reply,
streamed as it is chosen. Type /reset to forget the conversation, /exit (or
Ctrl-D) to leave. `--say` gives user turns up front and runs without a prompt,
for scripts and tests.
"""

import sys
from dataclasses import dataclass, field

import torch

from llmlab.common import log
from llmlab.common.device import resolve_device, resolve_dtype


@dataclass
class ChatArgs:
    model: str = field(default="smollm2-135m-instruct", metadata={
        "help": "alias, .gguf file, Hugging Face folder or hub id, or llmlab checkpoint with a chat template"})
    system: str | None = field(default=None, metadata={"help": "system message (default: the template's own)"})
    say: list[str] = field(default_factory=list, metadata={"help": "user turns to send, then exit (no prompt)"})
    max_new_tokens: int = field(default=256, metadata={"help": "most tokens per reply"})
    temperature: float = field(default=0.2, metadata={"help": "0 is greedy; higher is more random"})
    top_p: float | None = field(default=0.9, metadata={"help": "nucleus sampling mass"})
    top_k: int | None = field(default=None, metadata={"help": "sample among the k likeliest tokens"})
    min_p: float | None = field(default=None, metadata={"help": "drop tokens below min_p x the top probability"})
    repetition_penalty: float = field(default=1.1, metadata={"help": ">1 discourages repeating tokens"})
    seed: int | None = field(default=None, metadata={"help": "random seed"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16"})
    threads: int | None = field(default=None, metadata={"help": "CPU threads for torch (default: torch's choice)"})


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
        for piece in loaded.stream(ids, args.max_new_tokens, text=True, temperature=args.temperature,
                                   top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                                   repetition_penalty=args.repetition_penalty, seed=args.seed, truncate=True):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(pieces).strip()})
    return messages
