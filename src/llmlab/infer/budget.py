"""Budget forcing (s1, Muennighoff et al. 2025): a minimum and a maximum number of thinking tokens.

A reasoning model writes `<think>` steps `</think>` and then its answer. At inference we control how
long it thinks:

    minimum   below it the end of thinking is refused: with mode "suppress" the tokens that could
              begin `</think>` (and end-of-turn) get -inf logits; with mode "wait" the model may pick
              one, and "Wait" is written instead, so it reconsiders (s1's trick)
    maximum   at it `</think>` is written for the model, which must then answer

Then the answer runs until an end-of-turn token or `max_answer_tokens`. `controlled_decode` is the
loop underneath: the KV-cache decode of `llmlab.infer.generate`, with the choice of each next token
handed to a callback (budget forcing here; per-row seeds for alignment rollouts).

Footgun: the end marker is text, several tokens in most vocabularies (SmolLM2: "</", "think", ">").
Below the minimum every token whose text could begin it ("<", "</", ...) is refused, so thinking cannot
write "<" at all until then. The model itself must have learnt the format (`llmlab.data.reasoning`).
This file knows token ids and one tokenizer call per step; scoring answers is `llmlab.eval`'s.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from llmlab.data.reasoning import THINK_CLOSE, THINK_OPEN
from llmlab.infer.generate import fit_prompt
from llmlab.infer.sampling import apply_temperature, greedy, top_k_filter, top_p_filter
from llmlab.models.kv_cache import KVCache

Chooser = Callable[[int, torch.Tensor], torch.Tensor | None]
MODES = ("suppress", "wait")


def controlled_decode(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, choose: Chooser) -> int:
    """Prefill left-padded prompts, then decode with a KV cache; `choose(step, logits (B, V))` returns the
    next token of every row (B,), which is fed back, or None to stop. Returns the steps run."""
    seq_len = model.config.seq_len
    prompts = [fit_prompt(p, max_new_tokens, seq_len) for p in prompts]
    B, L = len(prompts), max(len(p) for p in prompts)
    max_new_tokens = min(max_new_tokens, seq_len - L)
    device = next(model.parameters()).device
    total = L + max_new_tokens
    pad = torch.tensor([L - len(p) for p in prompts], device=device)  # (B,)
    ids = torch.zeros(B, total, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        ids[b, :L] = torch.tensor([p[0]] * (L - len(p)) + p, device=device)
    keys = torch.arange(total, device=device)[None, :] >= pad[:, None]  # (B, total): True for real tokens
    positions = (torch.arange(total, device=device)[None, :] - pad[:, None]).clamp(min=0)  # (B, total)
    padded = bool(pad.any())
    was_training = model.training
    model.eval()
    steps, start = 0, 0
    try:
        with torch.inference_mode():
            cache = KVCache.for_model(model, B, total)
            for step in range(max_new_tokens):
                end = L + step
                logits = model(ids[:, start:end], kv_cache=cache,
                               positions=positions[:, start:end] if padded else None,
                               attn_mask=keys[:, :end] if padded else None, last_only=True)[:, -1]  # (B, V)
                nxt = choose(step, logits.float())
                if nxt is None:
                    break
                ids[:, end] = nxt
                start, steps = end, step + 1
    finally:
        model.train(was_training)
    return steps


def marker_start_ids(tokenizer, marker: str = THINK_CLOSE) -> list[int]:
    """Tokens whose text could begin `marker` once leading spaces are dropped: "<", "</", "</think>"..."""
    out = []
    for i in range(tokenizer.vocab_size):
        text = tokenizer.decode([i]).lstrip()
        if text and (marker.startswith(text) or text.startswith(marker)):
            out.append(i)
    return out


@dataclass
class Thought:
    """One budget-forced generation: the thinking (without the tags), the answer, and what forcing did."""

    thinking: str
    answer: str
    thinking_tokens: int
    waits: int = 0  # how many times "Wait" replaced an early end of thinking
    forced_end: bool = False  # the maximum was reached and `</think>` written for the model
    ids: list[int] = field(default_factory=list)  # every generated token, forced ones included


@dataclass
class _Row:
    phase: str = "think"  # think -> answer -> done
    think: list[int] = field(default_factory=list)
    answer: list[int] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)  # tokens to write for the model, one per step
    closing: bool = False  # the queue holds a forced `</think>`
    counted: int = 0
    waits: int = 0
    forced_end: bool = False


def budget_generate(model: torch.nn.Module, tokenizer, prompts: list[list[int]], *, min_thinking: int = 0,
                    max_thinking: int = 256, max_answer_tokens: int = 32, mode: str = "suppress",
                    stop_ids: set[int] | None = None, wait: str = "\nWait", temperature: float = 0.0,
                    top_k: int | None = None, top_p: float | None = None, seed: int | None = 0,
                    open_thinking: bool = True) -> list[Thought]:
    """Generate with thinking between `min_thinking` and `max_thinking` tokens for each prompt (token ids of a
    rendered chat ready for the reply). With `open_thinking` the `<think>` tag is appended to each prompt."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: unknown; choose one of {', '.join(MODES)}")
    if not 0 <= min_thinking <= max_thinking:
        raise ValueError(f"need 0 <= min_thinking <= max_thinking (got {min_thinking} and {max_thinking})")
    stops = set(stop_ids or {tokenizer.eos_id}) - {None}
    banned = sorted(set(marker_start_ids(tokenizer)) | stops)
    close_ids = tokenizer.encode(f"\n{THINK_CLOSE}\n")
    wait_ids = tokenizer.encode(wait)
    opener = tokenizer.encode(f"{THINK_OPEN}\n") if open_thinking else []
    rows = [_Row() for _ in prompts]
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed) if seed is not None else None
    filler = next(iter(stops)) if stops else 0  # fed to finished rows; their outputs are ignored

    def choose(step: int, logits: torch.Tensor) -> torch.Tensor | None:
        if all(r.phase == "done" for r in rows):
            return None
        for b, r in enumerate(rows):
            if r.phase == "think" and r.counted < min_thinking and mode == "suppress" and not r.queue:
                logits[b, banned] = float("-inf")
        if temperature == 0:
            sampled = greedy(logits)
        else:
            logits = apply_temperature(logits, temperature)
            logits = top_k_filter(logits, top_k) if top_k else logits
            logits = top_p_filter(logits, top_p) if top_p is not None else logits
            sampled = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
        return torch.tensor([_advance(r, int(t)) for r, t in zip(rows, sampled.tolist(), strict=True)],
                            device=logits.device)

    def _advance(r: _Row, token: int) -> int:
        if r.phase == "done":
            return filler
        if r.phase == "answer":
            r.answer.append(token)
            if token in stops or len(r.answer) >= max_answer_tokens:
                r.phase = "done"
            return token
        if not r.queue:
            if r.counted >= max_thinking and not r.closing:
                r.queue, r.closing, r.forced_end = list(close_ids), True, True
            elif token in banned and r.counted < min_thinking:  # mode "wait": the model tried to stop early
                r.queue = list(wait_ids)
                r.waits += 1
            elif token in stops:  # it ended its turn while thinking: close the thinking, then it answers
                r.queue, r.closing = list(close_ids), True
        if r.queue:
            token = r.queue.pop(0)
        if not r.closing:
            r.counted += 1
        r.think.append(token)
        if THINK_CLOSE in tokenizer.decode(r.think[-8:]) or (r.closing and not r.queue):
            r.phase = "answer"
        return token

    budget = max_thinking + len(wait_ids) + len(close_ids) + max_answer_tokens  # the most a row can write
    controlled_decode(model, [p + opener for p in prompts], budget, choose)
    out = []
    for r in rows:
        thinking = tokenizer.decode(r.think).split(THINK_CLOSE)[0].strip()
        answer = tokenizer.decode([t for t in r.answer if t not in stops]).strip()
        out.append(Thought(thinking, answer, r.counted, r.waits, r.forced_end, r.think + r.answer))
    return out
