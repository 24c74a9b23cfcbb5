"""Lab: sampling, the checks. References are llmlab's own filters (`llmlab.infer.sampling`, held equal to
transformers' logits warpers by the tests in tests/infer); `sample` is judged by the frequencies of many draws
against the filtered softmax, and by its determinism under a seeded generator.
"""

import torch

from llmlab.infer import sampling
from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose

CHECKS = CheckList()
INF = float("inf")


def _same_mask(out: torch.Tensor, ref: torch.Tensor) -> bool:
    """Equal where kept, -inf exactly where removed."""
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        return False
    kept = ref > -INF
    return bool(torch.equal(out > -INF, kept)) and close(out[kept], ref[kept])


def _filter_check(out, ref, mistakes: dict, otherwise: str) -> None:
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckFailed(f"returned {shape}, expected logits of shape {tuple(ref.shape)}")
    if _same_mask(out, ref):
        return
    if bool(((ref == -INF) & (out == 0)).any()) and _same_mask(out.masked_fill((ref == -INF) & (out == 0), -INF), ref):
        raise CheckFailed("removed tokens must get -inf, not 0: exp(0) = 1 still gives them probability")
    for message, wrong in mistakes.items():
        if _same_mask(out, wrong):
            raise CheckFailed(message)
    kept, expected = int((out > -INF).sum()), int((ref > -INF).sum())
    raise CheckFailed(f"{otherwise} (you keep {kept} tokens, the answer keeps {expected})")


@CHECKS.add("apply_temperature", "divides the logits by the temperature")
def temperature(ws: Workspace) -> None:
    logits = torch.randn(3, 10)
    for t in (0.5, 1.0, 2.0):
        out = call(ws.get("apply_temperature"), logits.clone(), t)
        diagnose(out, logits / t, {"you multiplied by the temperature: divide instead": logits * t},
                 f"differs from logits / temperature at temperature {t}")


@CHECKS.add("top_k_filter", "keeps the k largest logits of each row, -inf elsewhere; k > V keeps all")
def top_k(ws: Workspace) -> None:
    fn = ws.get("top_k_filter")
    logits = torch.randn(4, 12)
    for k in (1, 3, 12):
        ref = sampling.top_k_filter(logits, k)
        out = call(fn, logits.clone(), k)
        global_kth = logits.flatten().topk(k * 4).values[-1]  # the mistake of one top-k over the whole batch
        smallest_kth = logits.topk(k, largest=False).values[..., -1:]  # (B, 1)
        _filter_check(out, ref, {
            "you kept the k smallest logits: keep the largest": logits.masked_fill(logits > smallest_kth, -INF),
            "top-k is per row: each sequence keeps its own k tokens": logits.masked_fill(logits < global_kth, -INF),
            f"you keep k + 1 = {k + 1} tokens: the k-th largest is the last one kept":
                sampling.top_k_filter(logits, k + 1),
            f"you keep k - 1 = {k - 1} tokens: keep the k-th largest too": sampling.top_k_filter(logits, max(k - 1, 1))
            if k > 1 else ref,
        }, f"wrong for k={k}")
    try:
        out = call(fn, logits.clone(), 50)
    except CheckFailed:
        raise
    except Exception as e:
        raise CheckFailed(f"k=50 on 12 tokens raised {type(e).__name__}: a k larger than the vocabulary keeps "
                          "every token (use min(k, V))") from None
    _filter_check(out, logits, {}, "a k larger than the vocabulary keeps every token")


@CHECKS.add("top_p_filter", "keeps the smallest set of likeliest tokens reaching p, in vocabulary order")
def top_p(ws: Workspace) -> None:
    fn = ws.get("top_p_filter")
    logits = torch.randn(4, 12) * 2
    for p in (0.5, 0.9, 1e-4):
        ref = sampling.top_p_filter(logits, p)
        out = call(fn, logits.clone(), p)
        if isinstance(out, torch.Tensor) and out.shape == ref.shape and bool((out == -INF).all(-1).any()):
            raise CheckFailed(f"at p={p} a whole row is -inf: keep the token that takes the sum past p, so the "
                              "most likely token is always kept")
        probs = logits.softmax(-1)
        sorted_probs, order = probs.sort(-1, descending=True)
        cum = sorted_probs.cumsum(-1)
        exclusive = (cum <= p).scatter(-1, order, cum <= p)  # drops the token that crosses p
        exclusive[torch.arange(4), probs.argmax(-1)] = True
        unsorted = cum - sorted_probs >= p  # the sorted mask applied to the unsorted logits
        _filter_check(out, ref, {
            "keep the token that takes the sum past p too: the kept mass must reach p":
                logits.masked_fill(~exclusive, -INF),
            "the mask is in sorted order: put it back in vocabulary order (scatter with the sort's indices)":
                logits.masked_fill(unsorted, -INF),
        }, f"wrong for p={p}")


@CHECKS.add("sample", "draws follow softmax of the filtered logits; seeded, reproducible; temperature 0 is argmax")
def sample_distribution(ws: Workspace) -> None:
    fn = ws.get("sample")
    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    logits = row.expand(20000, -1).clone()  # many rows of one distribution: the draws' frequencies estimate it
    try:
        greedy = call(fn, logits[:3].clone(), temperature=0.0)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as e:
        raise CheckFailed(f"temperature=0 means greedy (yours raised {type(e).__name__}): return the argmax, "
                          "do not divide by 0") from None
    if not isinstance(greedy, torch.Tensor) or greedy.shape != (3,):
        raise CheckFailed(f"sample should return token ids of shape (B,), got "
                          f"{tuple(greedy.shape) if isinstance(greedy, torch.Tensor) else type(greedy).__name__}")
    if not torch.equal(greedy.long(), torch.zeros(3, dtype=torch.long)):
        raise CheckFailed("temperature=0 means greedy: return the argmax (do not divide by 0)")
    for kwargs in ({"temperature": 1.0}, {"temperature": 0.7, "top_k": 4}, {"temperature": 1.5, "top_p": 0.8}):
        ids = call(fn, logits.clone(), generator=torch.Generator().manual_seed(1), **kwargs)
        if not isinstance(ids, torch.Tensor) or ids.shape != (20000,):
            raise CheckFailed("sample should return one token id per row, shape (B,)")
        again = call(fn, logits.clone(), generator=torch.Generator().manual_seed(1), **kwargs)
        if not torch.equal(ids, again):
            raise CheckFailed("two calls with equally seeded generators drew different tokens: pass generator= to "
                              "torch.multinomial")
        if ids.unique().numel() == 1:
            raise CheckFailed(f"with {kwargs} every draw is the same token: draw at random (torch.multinomial), "
                              "do not take the argmax")
        freq = torch.bincount(ids.long(), minlength=6).float() / len(ids)
        filtered = sampling.apply_temperature(row[None], kwargs["temperature"])
        if "top_k" in kwargs:
            filtered = sampling.top_k_filter(filtered, kwargs["top_k"])
        if "top_p" in kwargs:
            filtered = sampling.top_p_filter(filtered, kwargs["top_p"])
        probs = filtered.softmax(-1)[0]
        if not torch.allclose(freq, probs, atol=0.015):  # ~4 standard errors for 20000 draws
            plain = (row / kwargs["temperature"]).softmax(-1)
            hint = "the filters are not applied" if torch.allclose(freq, plain, atol=0.015) else \
                "is the temperature applied, and the filters in order (temperature, top-k, top-p)?"
            raise CheckFailed(f"with {kwargs} the draws' frequencies {[round(f, 3) for f in freq.tolist()]} differ "
                              f"from the probabilities {[round(q, 3) for q in probs.tolist()]}: {hint}")
