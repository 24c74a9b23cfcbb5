"""lm-evaluation-harness runs llmlab models: an lm-eval model class over llmlab's own scoring and generation.

`LlmlabLM` answers lm-eval's three request types with llmlab code: `loglikelihood` and
`loglikelihood_rolling` with `llmlab.eval.loglik` (tokenised exactly as lm-eval's `hf` backend, so the
two backends agree on a model saved with `save_pretrained`), `generate_until` with
`llmlab.infer.generate.generate_batch` (greedy unless the task samples; `until` strings cut the text,
and tokens that contain one stop the row early). Chat templates render with the model's tokenizer.

This is the only llmlab module that imports lm_eval: an optional integration, nothing else imports it.

Loading: evaluation sits below `llmlab.load` (docs/architecture.md), so this class cannot open a model
by name itself. Give it a loaded model (`LlmlabLM(pretrained=lm)`, for `lm_eval.simple_evaluate`), or a
loader: `register(llmlab.load)` registers the class under the model name "llmlab", so that
`--model llmlab --model_args pretrained=<anything llmlab.load opens>` works, and `cli(llmlab.load)` runs
lm-eval's command line after registering. lm-eval finds models only in its registry (no entry points),
so a plain `lm_eval --model llmlab` needs that registration to have run first: use the command that
calls `cli`.
"""

import json
import sys
from collections.abc import Callable

import lm_eval.models  # noqa: F401  (lm-eval's own names first: its registry fills itself only while empty)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from llmlab.common import log
from llmlab.common.errors import UserError
from llmlab.eval.loglik import loglikelihood, loglikelihood_rolling, prefix_id, tokenizer_of
from llmlab.infer.generate import generate_batch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAMPLING_KEYS = ("top_k", "top_p", "min_p", "repetition_penalty")  # generation keywords passed on as they are


class LlmlabLM(LM):
    """An lm-eval model over an llmlab `Pretrained`; `pretrained` is one, or a source for `load_fn`.

    batch_size counts model rows (a row holds one context and all its continuations, see
    `llmlab.eval.loglik`); max_batch_size is accepted because lm-eval always passes it, and unused.
    """

    load_fn: Callable | None = None  # set by `register`: source, device=, dtype= -> Pretrained

    def __init__(self, pretrained, batch_size: int | str = 16, max_length: int | None = None,
                 max_gen_toks: int = 256, device: str | None = None, dtype: str | None = None,
                 max_batch_size: int | None = None, seed: int | None = None):
        super().__init__()
        if isinstance(pretrained, str):
            if self.load_fn is None:
                raise UserError("LlmlabLM: pretrained is a name but no loader is registered; call "
                                "register(llmlab.load) first, or pass a loaded model")
            if dtype is not None and dtype not in DTYPES:
                raise UserError(f"dtype {dtype!r}: use one of {', '.join(DTYPES)}")
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            pretrained = self.load_fn(pretrained, device=device, dtype=DTYPES[dtype or "float32"])
        self.lm = pretrained
        self.tokenizer = tokenizer_of(pretrained)
        self._device = next(pretrained.model.parameters()).device
        if str(batch_size).startswith("auto"):
            log.info("LlmlabLM: batch_size auto is not supported; using 16")
            batch_size = 16
        self.batch_size = int(batch_size)
        self.max_length = int(max_length or pretrained.model.config.seq_len)
        self.max_gen_toks = int(max_gen_toks)
        self.seed = None if seed is None else int(seed)
        if self.batch_size < 1 or self.max_gen_toks < 1:
            raise UserError(f"batch_size and max_gen_toks must be at least 1, got {batch_size}, {max_gen_toks}")

    # ---- the three request types --------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(r.args[:2]) for r in requests]
        out = loglikelihood(self.lm, pairs, self.batch_size, progress=not disable_tqdm, max_length=self.max_length)
        for pair, result in zip(pairs, out, strict=True):
            self.cache_hook.add_partial("loglikelihood", pair, result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [r.args[0] for r in requests]
        out = loglikelihood_rolling(self.lm, texts, self.max_length, batch_size=self.batch_size,
                                    progress=not disable_tqdm)
        for text, result in zip(texts, out, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), result)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations cut at the first `until` string (or EOS), grouped by generation settings."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
        out: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm)
        for members in groups.values():
            contexts = [requests[i].args[0] for i in members]
            for i, text in zip(members, self._generate(contexts, requests[members[0]].args[1]), strict=True):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args[:2], text)
            bar.update(len(members))
        bar.close()
        return out

    def _generate(self, contexts: list[str], gen_kwargs: dict) -> list[str]:
        kwargs = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
        tok = self.tokenizer
        eos = tok.decode([tok.eos_id]) if tok.eos_id is not None else None
        until = handle_stop_sequences(kwargs.pop("until"), eos=eos)
        max_new = kwargs.pop("max_gen_toks")
        temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
        sampling = {k: kwargs.pop(k) for k in SAMPLING_KEYS if k in kwargs}
        if kwargs:
            log.info(f"LlmlabLM: ignoring generation settings {sorted(kwargs)}")
        max_context = self.max_length - max_new
        if max_context < 1:
            raise UserError(f"max_gen_toks {max_new} leaves no room for a prompt in max_length {self.max_length}")
        prompts = [tok.encode(c, allowed_special="all")[-max_context:] or [prefix_id(tok)] for c in contexts]
        specials = set(tok.special_tokens.values())
        # a token whose text holds a stop string ends its row: everything after it is cut anyway
        stop_ids = {i for i, t in enumerate(tok.tokens) if any(s.encode() in t for s in until if s)}
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        texts = [""] * len(prompts)
        for b in range(0, len(order), self.batch_size):
            batch = order[b:b + self.batch_size]
            outs = generate_batch(self.lm.model, [prompts[i] for i in batch], max_new, temperature=temperature,
                                  seed=self.seed, stop_ids=stop_ids, **sampling)
            for i, ids in zip(batch, outs, strict=True):
                text = tok.decode([t for t in ids if t not in specials])
                texts[i] = postprocess_generated_text(text, until, think_end_token=None)
        return texts

    # ---- what lm-eval asks of a model besides requests ----------------------------------------

    @property
    def tokenizer_name(self) -> str:
        return self.lm.source

    def chat_template(self, chat_template: bool | str = False) -> str:
        return self.tokenizer.chat_template or ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.render(chat_history, add_generation_prompt=add_generation_prompt)

    def get_model_info(self) -> dict:
        return {"model_source": self.lm.source, "max_length": self.max_length}


def register(load_fn: Callable, name: str = "llmlab") -> type[LlmlabLM]:
    """Register `LlmlabLM` with lm-eval under `name`, opening `pretrained=` sources with `load_fn`.

    `load_fn(source, device=..., dtype=...)` returns a `Pretrained` (`llmlab.load` does). Calling
    it again is harmless; the last loader wins.
    """
    LlmlabLM.load_fn = staticmethod(load_fn)
    register_model(name)(LlmlabLM)
    return LlmlabLM


def cli(load_fn: Callable, argv: list[str] | None = None) -> None:
    """lm-eval's command line with the "llmlab" model registered; argv defaults to this process's.

    `cli(llmlab.load, ["--model", "llmlab", "--model_args", "pretrained=smollm2-135m-instruct",
    "--tasks", "hellaswag"])` is `lm_eval --model llmlab ...`.
    """
    from lm_eval.__main__ import cli_evaluate

    register(load_fn)
    saved = sys.argv
    sys.argv = [saved[0]] + (list(argv) if argv is not None else saved[1:])
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
