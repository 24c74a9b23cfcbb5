"""Autoregressive generation: prefill the prompt, then decode one token at a time.

The engine knows nothing about tokenization, only token ids. One loop serves a
single prompt (`stream`, `generate`) and a batch of prompts of different
lengths (`generate_batch`): prompts are left-padded, each row gets its own
positions (0 at its first real token) and a key mask that hides the padding,
so every row computes exactly what it would alone.

With `use_cache` (the default) keys and values live in a preallocated
`KVCache` sized for prompt + new tokens: the prompt runs once (prefill), then
each step feeds only the newest token (decode). Without it, every step reruns
the whole sequence: the same tokens, quadratically more work.

Stopping: `eos_id` and `stop_ids` end a row (the stop token is returned, as
transformers does); `min_new_tokens` forbids them until that many tokens exist.
Stop *strings* need text, so they live in `llmlab.infer.text`.
"""

from collections.abc import Iterable, Iterator

import torch

from llmlab.common.errors import UserError
from llmlab.infer.sampling import sample
from llmlab.models.kv_cache import KVCache

Ids = list[int] | torch.Tensor


def _as_list(idx: Ids) -> list[int]:
    if isinstance(idx, torch.Tensor):
        if idx.dim() == 2 and idx.shape[0] == 1:
            idx = idx[0]
        if idx.dim() != 1:
            raise UserError(f"prompt: expected token ids of shape (T,) or (1, T), got {tuple(idx.shape)}")
        return idx.tolist()
    return [int(i) for i in idx]


def fit_prompt(prompt: list[int], max_new_tokens: int, seq_len: int, truncate: bool = False) -> list[int]:
    """Check a prompt against the context window; with `truncate`, keep its last tokens so new ones fit.

    seq_len=8, max_new_tokens=3: a 6-token prompt passes; a 9-token prompt raises, or with
    truncate keeps its last 5 tokens.
    """
    if not prompt:
        raise UserError("prompt: no tokens; give at least one token (e.g. the BOS token)")
    if len(prompt) + max_new_tokens <= seq_len or (len(prompt) < seq_len and not truncate):
        return prompt
    if not truncate:
        raise UserError(f"prompt: {len(prompt)} tokens do not fit the context window of {seq_len}; "
                        f"shorten it or pass --truncate to keep its last tokens")
    return prompt[-max(1, seq_len - max_new_tokens):]


def _decode_loop(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, *, temperature: float,
                 top_k: int | None, top_p: float | None, min_p: float | None, repetition_penalty: float,
                 min_new_tokens: int, stop: set[int], seed: int | None, use_cache: bool) -> Iterator[torch.Tensor]:
    """Yield the next token of every row (B,) per step; rows that stopped keep running, the caller ignores them."""
    seq_len, vocab = model.config.seq_len, model.config.vocab_size
    for p in prompts:
        if max(p) >= vocab or min(p) < 0:
            raise UserError(f"prompt: token id {max(p) if max(p) >= vocab else min(p)} is outside the "
                            f"model's vocabulary (0..{vocab - 1}); was it encoded with another tokenizer?")
    B, L = len(prompts), max(len(p) for p in prompts)
    max_new_tokens = min(max_new_tokens, seq_len - L)  # the context window ends generation
    if max_new_tokens <= 0:
        return
    device = next(model.parameters()).device
    total = L + max_new_tokens
    # left-padded prompts, then new tokens; padding repeats a row's first token, so the repetition
    # penalty sees no token the row lacks (the key mask hides the padding from attention)
    ids = torch.zeros(B, total, dtype=torch.long, device=device)
    pad = torch.tensor([L - len(p) for p in prompts], device=device)  # (B,)
    for b, p in enumerate(prompts):
        ids[b, :L] = torch.tensor([p[0]] * (L - len(p)) + p, device=device)
    padded = bool(pad.any())
    keys = torch.arange(total, device=device)[None, :] >= pad[:, None]  # (B, total): True for real tokens
    positions = (torch.arange(total, device=device)[None, :] - pad[:, None]).clamp(min=0)  # (B, total)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    stop_ids = torch.tensor(sorted(stop), dtype=torch.long, device=device)
    cache = KVCache.for_model(model, B, total) if use_cache else None
    start = 0  # first position not yet run through the model
    for step in range(max_new_tokens):
        end = L + step
        idx = ids[:, start:end] if use_cache else ids[:, :end]
        run_from = start if use_cache else 0
        logits = model(idx, kv_cache=cache,
                       positions=positions[:, run_from:end] if padded else None,
                       attn_mask=keys[:, :end] if padded else None, last_only=True)[:, -1]  # (B, V)
        if step < min_new_tokens and len(stop_ids):
            logits[:, stop_ids] = float("-inf")
        prev = ids[:, :end] if repetition_penalty != 1.0 else None
        nxt = sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                     repetition_penalty=repetition_penalty, prev_ids=prev, generator=generator)  # (B,)
        ids[:, end] = nxt
        start = end
        yield nxt


def _stop_set(eos_id: int | None, stop_ids: Iterable[int]) -> set[int]:
    return ({eos_id} if eos_id is not None else set()) | set(stop_ids)


def stream(model: torch.nn.Module, idx: Ids, max_new_tokens: int, *, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
           repetition_penalty: float = 1.0, min_new_tokens: int = 0, eos_id: int | None = None,
           stop_ids: Iterable[int] = (), seed: int | None = None, use_cache: bool = True,
           truncate: bool = False) -> Iterator[int]:
    """Yield new token ids one by one as they are chosen (a stop token is yielded, then the stream ends)."""
    prompt = fit_prompt(_as_list(idx), max_new_tokens, model.config.seq_len, truncate)
    stop = _stop_set(eos_id, stop_ids)
    was_training = model.training
    model.eval()
    try:
        steps = _decode_loop(model, [prompt], max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             min_p=min_p, repetition_penalty=repetition_penalty, min_new_tokens=min_new_tokens,
                             stop=stop, seed=seed, use_cache=use_cache)
        while True:
            with torch.inference_mode():  # entered per step: a generator must not leak the mode to its caller
                nxt = next(steps, None)
            if nxt is None:
                return
            token = int(nxt[0])
            yield token
            if token in stop:
                return
    finally:
        model.train(was_training)


def generate(model: torch.nn.Module, idx: Ids, max_new_tokens: int, **kwargs) -> list[int]:
    """The new token ids for one prompt (the prompt itself is not repeated). Arguments as in `stream`."""
    return list(stream(model, idx, max_new_tokens, **kwargs))


def generate_batch(model: torch.nn.Module, prompts: list[Ids], max_new_tokens: int, *, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
                   repetition_penalty: float = 1.0, min_new_tokens: int = 0, eos_id: int | None = None,
                   stop_ids: Iterable[int] = (), seed: int | None = None, use_cache: bool = True,
                   truncate: bool = False) -> list[list[int]]:
    """New token ids for each of several prompts, run together (left padding, per-row positions)."""
    if not prompts:
        return []
    seq_len = model.config.seq_len
    rows = [fit_prompt(_as_list(p), max_new_tokens, seq_len, truncate) for p in prompts]
    stop = _stop_set(eos_id, stop_ids)
    out: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for nxt in _decode_loop(model, rows, max_new_tokens, temperature=temperature, top_k=top_k,
                                    top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
                                    min_new_tokens=min_new_tokens, stop=stop, seed=seed, use_cache=use_cache):
                for b, token in enumerate(nxt.tolist()):
                    if not done[b]:
                        out[b].append(token)
                        done[b] = token in stop
                if all(done):
                    break
    finally:
        model.train(was_training)
    return out
