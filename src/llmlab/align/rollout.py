"""Rollouts for RL on a language model: sample completions with the KV cache, then score their tokens.

`rollout` repeats each prompt `group_size` times (GRPO's group; 1 for PPO), samples every row with its
own seed through `llmlab.infer.budget.controlled_decode` (so a completion does not depend on what else
is in the batch, and a resumed run samples the same), stops a row at an end-of-turn token (kept in
the completion and its mask, as TRL keeps EOS), and returns:

    prompt_ids       N token lists (the prompts, each repeated)
    completion_ids   (N, T) right-padded
    mask             (N, T) 1.0 on each completion's tokens, through its stop token
    texts            N completions as text, stop tokens removed
    truncated        (N,) True when a row hit max_new_tokens without stopping
    logps            (N, T) per-token log-probabilities under the sampling policy (with_logps), recomputed
                     by one forward pass, since the decode loop runs in inference mode

`completion_logps` is that forward pass: prompts left-padded, completions right-padded, one call of the
model projecting only the positions that predict completion tokens (`logits_mask`); logits are divided
by the sampling temperature first, as TRL does. It also returns the final hidden states there, for a
value head. This file knows nothing about rewards or losses.
"""

from dataclasses import dataclass

import torch

from llmlab.infer.budget import controlled_decode
from llmlab.infer.sampling import apply_temperature, greedy, top_k_filter, top_p_filter


@dataclass
class Rollout:
    prompt_ids: list[list[int]]
    completion_ids: torch.Tensor
    mask: torch.Tensor
    texts: list[str]
    truncated: torch.Tensor
    logps: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)


def sample_rows(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, seeds: list[int],
                stop_ids: set[int], temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None) -> list[list[int]]:
    """New tokens for each prompt (a stop token ends a row and is kept), each row drawn with its own seed."""
    device = next(model.parameters()).device
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    out: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    filler = next(iter(stop_ids)) if stop_ids else 0  # fed to finished rows, ignored

    def choose(step: int, logits: torch.Tensor) -> torch.Tensor | None:
        if all(done):
            return None
        if temperature == 0:
            nxt = greedy(logits)
        else:
            logits = apply_temperature(logits, temperature)
            logits = top_k_filter(logits, top_k) if top_k else logits
            logits = top_p_filter(logits, top_p) if top_p is not None else logits
            probs = logits.softmax(-1)  # (B, V)
            nxt = torch.stack([torch.multinomial(probs[b], 1, generator=g)[0] for b, g in enumerate(generators)])
        for b, token in enumerate(nxt.tolist()):
            if done[b]:
                nxt[b] = filler
            else:
                out[b].append(token)
                done[b] = token in stop_ids
        return nxt

    controlled_decode(model, prompts, max_new_tokens, choose)
    return out


def pad_completions(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N, T), mask (N, T) float) right-padded to the longest row (at least one column)."""
    T = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T)
    for b, r in enumerate(rows):
        ids[b, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[b, :len(r)] = 1.0
    return ids, mask


def completion_logps(model: torch.nn.Module, prompt_ids: list[list[int]], completion_ids: torch.Tensor,
                     mask: torch.Tensor, temperature: float = 1.0, with_hidden: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(per-token log-probabilities (N, T) of the completion tokens, 0 on padding; final hidden states (N, T, C)
    at the positions that predict them, when `with_hidden`). Runs with the model's grad mode as it is."""
    device = next(model.parameters()).device
    N, T = completion_ids.shape
    L = max(len(p) for p in prompt_ids)
    idx = torch.zeros(N, L + T, dtype=torch.long, device=device)
    for b, p in enumerate(prompt_ids):
        idx[b, L - len(p):L] = torch.tensor(p, device=device)
    idx[:, L:] = completion_ids.to(device)
    pad = torch.tensor([L - len(p) for p in prompt_ids], device=device)  # (N,)
    keys = torch.arange(L + T, device=device)[None, :] >= pad[:, None]  # (N, L+T): True for real tokens
    positions = (torch.arange(L + T, device=device)[None, :] - pad[:, None]).clamp(min=0)  # (N, L+T)
    predicts = torch.zeros(N, L + T, dtype=torch.bool, device=device)
    predicts[:, L - 1:L + T - 1] = True  # position L-1+j predicts completion token j
    hidden: list[torch.Tensor] = []
    hook = model.norm_f.register_forward_hook(lambda m, i, o: hidden.append(o)) if with_hidden else None
    try:
        logits = model(idx, positions=positions, attn_mask=keys, logits_mask=predicts)  # (N*T, V)
    finally:
        if hook is not None:
            hook.remove()
    logits = apply_temperature(logits.float(), temperature).view(N, T, -1)  # (N, T, V)
    targets = completion_ids.to(device)[..., None]  # (N, T, 1)
    logps = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (N, T)
    logps = logps * mask.to(device)
    return logps, (hidden[0].view(N, T, -1) if with_hidden else None)


def rollout(model: torch.nn.Module, tokenizer, prompts: list[list[int]], group_size: int, max_new_tokens: int, *,
            seed: int, stop_ids: set[int], temperature: float = 1.0, top_k: int | None = None,
            top_p: float | None = None, with_logps: bool = True) -> Rollout:
    """`group_size` sampled completions of each prompt (rows group after group), row b seeded with seed + b."""
    rows = [p for p in prompts for _ in range(group_size)]
    new = sample_rows(model, rows, max_new_tokens, [seed + b for b in range(len(rows))], stop_ids, temperature,
                      top_k, top_p)
    completion_ids, mask = pad_completions(new, tokenizer.pad_id)
    texts = [tokenizer.decode([t for t in r if t not in stop_ids]) for r in new]
    truncated = torch.tensor([not r or r[-1] not in stop_ids for r in new])
    out = Rollout(rows, completion_ids, mask, texts, truncated)
    if with_logps:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out.logps = completion_logps(model, rows, completion_ids, mask, temperature)[0]
        model.train(was_training)
    return out
