"""`llmlab generate`: load a model (checkpoint, HF folder, GGUF, hub id or alias) and continue a prompt.

Tokens are printed to stdout as they are chosen. `--chat` wraps the prompt in
the model's chat template as one user turn; `--ids` prints token ids instead of text.
"""

import sys
from dataclasses import dataclass

import torch

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device, resolve_dtype
from llmlab.common.errors import UserError
from llmlab.recipes.shared import RuntimeArgs, SamplingArgs, sampling_kwargs


@dataclass
class GenerateArgs(SamplingArgs, RuntimeArgs):
    checkpoint: str = arg("smollm2-135m-instruct", "llmlab checkpoint or run folder, Hugging Face folder or hub id, "
                                                   ".gguf file, or an alias")
    prompt: str = arg("", "text to continue (empty: the BOS token)")
    chat: bool = arg(False, "render the prompt as a user turn with the chat template")
    max_new_tokens: int = arg(128, "most tokens to generate")
    min_new_tokens: int = arg(0, "tokens to generate before EOS may end the text")
    stop: list[str] = arg([], "strings that end the text (not printed)")
    truncate: bool = arg(False, "keep the end of a prompt longer than the context window instead of failing")
    device_map: str | None = arg(None, "spread the layers over devices: auto, balanced, or '0:0-15,1:16-31,cpu:rest' "
                                       "(see llmlab.models.device_map)")


def run(args: GenerateArgs) -> str:
    """Print and return the generated text."""
    import llmlab

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = llmlab.load(args.checkpoint, device=resolve_device(args.device), dtype=resolve_dtype(args.dtype),
                         device_map=args.device_map)
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
                               min_new_tokens=args.min_new_tokens, truncate=args.truncate, **sampling_kwargs(args)):
        sys.stdout.write(piece)
        sys.stdout.flush()
        pieces.append(piece)
    sys.stdout.write("\n")
    return "".join(pieces)
