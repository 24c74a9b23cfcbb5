"""`llmlab generate`: load a model (checkpoint, HF folder, GGUF, hub id or alias) and continue a prompt.

Tokens are printed to stdout as they are chosen. `--chat` wraps the prompt in
the model's chat template as one user turn; `--ids` prints token ids instead of text.
"""

import sys
from dataclasses import dataclass, field

import torch

from llmlab.common import log
from llmlab.common.device import resolve_device, resolve_dtype
from llmlab.common.errors import UserError


@dataclass
class GenerateArgs:
    checkpoint: str = field(default="smollm2-135m-instruct", metadata={
        "help": "llmlab checkpoint folder, Hugging Face folder or hub id, .gguf file, or an alias"})
    prompt: str = field(default="", metadata={"help": "text to continue (empty: the BOS token)"})
    chat: bool = field(default=False, metadata={"help": "render the prompt as a user turn with the chat template"})
    max_new_tokens: int = field(default=128, metadata={"help": "most tokens to generate"})
    min_new_tokens: int = field(default=0, metadata={"help": "tokens to generate before EOS may end the text"})
    temperature: float = field(default=0.8, metadata={"help": "0 is greedy; higher is more random"})
    top_k: int | None = field(default=None, metadata={"help": "sample among the k likeliest tokens"})
    top_p: float | None = field(default=0.95, metadata={"help": "sample among the likeliest tokens holding this mass"})
    min_p: float | None = field(default=None, metadata={"help": "drop tokens below min_p x the top probability"})
    repetition_penalty: float = field(default=1.0, metadata={"help": ">1 discourages tokens already present"})
    stop: list[str] = field(default_factory=list, metadata={"help": "strings that end the text (not printed)"})
    seed: int | None = field(default=None, metadata={"help": "random seed, for reproducible samples"})
    truncate: bool = field(default=False, metadata={
        "help": "keep the end of a prompt longer than the context window instead of failing"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16"})
    threads: int | None = field(default=None, metadata={"help": "CPU threads for torch (default: torch's choice)"})


def run(args: GenerateArgs) -> str:
    """Print and return the generated text."""
    import llmlab

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = llmlab.load(args.checkpoint, device=resolve_device(args.device), dtype=resolve_dtype(args.dtype))
    tok = loaded.tokenizer
    if tok is None:
        raise UserError(f"{args.checkpoint}: has no tokenizer, so text cannot be encoded")
    if args.chat:
        ids = loaded.chat_ids([{"role": "user", "content": args.prompt}])
    elif args.prompt:
        ids = loaded.encode(args.prompt)
    elif tok.bos_id is not None:
        ids = [tok.bos_id]
    else:
        raise UserError("--prompt is empty and the tokenizer has no BOS token to start from; give a prompt")
    log.info(f"{loaded.source}: {len(ids)} prompt tokens")
    pieces = []
    for piece in loaded.stream(ids, args.max_new_tokens, text=True, stop=args.stop,
                               min_new_tokens=args.min_new_tokens, temperature=args.temperature, top_k=args.top_k,
                               top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                               seed=args.seed, truncate=args.truncate):
        sys.stdout.write(piece)
        sys.stdout.flush()
        pieces.append(piece)
    sys.stdout.write("\n")
    return "".join(pieces)
