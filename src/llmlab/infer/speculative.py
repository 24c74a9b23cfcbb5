"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023), greedy: exactly the target's output.

A small draft model with the same vocabulary guesses k tokens one by one; the
target checks all of them in one forward pass over k + 1 positions. Every guess
that matches the target's own argmax is kept, and the target's token at the
first mismatch (or after the last guess) comes for free, so each round adds
between 1 and k + 1 tokens for one target pass. With greedy decoding the result
is token for token what `generate(target, ..., temperature=0)` gives.

Both models keep a KV cache holding every token except the newest one (`last`).
Rejected guesses are dropped by moving the cache's fill mark back (`cache.pos`);
their stale entries are overwritten by the next write. Token ids only.
"""

from collections.abc import Iterable

import torch

from llmlab.common.errors import UserError
from llmlab.infer.generate import Ids, _as_list, fit_prompt
from llmlab.models.kv_cache import KVCache


@torch.inference_mode()
def speculative_generate(target: torch.nn.Module, draft: torch.nn.Module, idx: Ids, max_new_tokens: int, *,
                         k: int = 4, eos_id: int | None = None, stop_ids: Iterable[int] = (),
                         stats: dict | None = None) -> list[int]:
    """Greedy new tokens of `target` for one prompt, drafted k at a time by `draft`.

    stats, if given, is filled with rounds, drafted and accepted counts.
    """
    if target.config.vocab_size != draft.config.vocab_size:
        raise UserError(f"speculative decoding: the draft's vocabulary ({draft.config.vocab_size}) differs from "
                        f"the target's ({target.config.vocab_size}); they must share a tokenizer")
    seq_len = min(target.config.seq_len, draft.config.seq_len)
    prompt = fit_prompt(_as_list(idx), max_new_tokens, seq_len)
    max_new_tokens = min(max_new_tokens, seq_len - len(prompt) - k - 1)  # room for a full round of guesses
    stop = ({eos_id} if eos_id is not None else set()) | set(stop_ids)
    target.eval()
    draft.eval()
    size = len(prompt) + max_new_tokens + k + 1
    t_cache, d_cache = KVCache.for_model(target, 1, size), KVCache.for_model(draft, 1, size)
    device = next(target.parameters()).device
    if len(prompt) > 1:  # prefill everything but the last prompt token
        head = torch.tensor([prompt[:-1]], device=device)
        target(head, kv_cache=t_cache)
        draft(head, kv_cache=d_cache)
    out: list[int] = []
    last = prompt[-1]
    rounds = drafted = accepted = 0
    while len(out) < max_new_tokens:
        start = t_cache.pos
        guesses = []
        tok = last
        for _ in range(k):  # the draft guesses k tokens greedily, one at a time
            tok = int(draft(torch.tensor([[tok]], device=device), kv_cache=d_cache)[0, -1].argmax())
            guesses.append(tok)
        # the target scores last + all guesses at once: (1, k + 1, V) -> its own choice at each position
        checked = torch.tensor([[last, *guesses]], device=device)
        choice = target(checked, kv_cache=t_cache)[0].argmax(-1).tolist()
        n = 0
        while n < k and guesses[n] == choice[n]:
            n += 1
        new = guesses[:n] + [choice[n]]  # the accepted guesses, then the target's own next token
        rounds, drafted, accepted = rounds + 1, drafted + k, accepted + n
        t_cache.pos = start + 1 + n  # keep last and the accepted guesses; the new `last` is not cached yet
        if n == k:  # the draft never ran its own last guess: cache it
            draft(torch.tensor([[guesses[-1]]], device=device), kv_cache=d_cache)
        d_cache.pos = start + 1 + n
        for token in new[:max_new_tokens - len(out)]:
            out.append(token)
            if token in stop:
                max_new_tokens = len(out)
                break
        last = new[-1]
    if stats is not None:
        stats.update(rounds=rounds, drafted=drafted, accepted=accepted,
                     acceptance=accepted / drafted if drafted else 0.0)
    return out
