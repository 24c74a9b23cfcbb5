"""Lab: kv-cache, the checks. The cache is checked on its own (what update returns, when pos moves) and inside
llmlab's decoder, where prefill plus one token at a time must give the logits of one full forward pass.
`greedy_decode` must give llmlab's greedy tokens (`llmlab.infer.generate`), and really use the cache: a hook
counts how many tokens each forward call gets.
"""

import torch

from llmlab.infer.generate import generate_batch
from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, expect_tensor
from llmlab.models import Transformer, get_preset

CHECKS = CheckList()


def _cache(ws: Workspace, *args):
    cache = call(ws.get("KVCache"), *args)
    if getattr(cache, "pos", None) != 0:
        raise CheckFailed(f"a new cache should have pos = 0, found {getattr(cache, 'pos', 'no pos attribute')}")
    return cache


def _kv(T: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 3, T, 4), torch.randn(2, 3, T, 4)  # (B, Hkv, T, D)


def _model(seed: int = 0) -> Transformer:
    """Grouped-query attention (2 key/value heads for 4 query heads) and RoPE. Weights 25 times the usual
    scale, so that even untrained, the next token depends on the context and not only on the last token."""
    torch.manual_seed(seed)
    config = get_preset("llama-tiny", vocab_size=64, seq_len=32, n_layer=2, n_embd=32, n_head=4, init_std=0.5)
    return Transformer(config).eval()


@CHECKS.add("KVCache", "update returns the stored keys and values; after advance it appends along the sequence")
def cache_update(ws: Workspace) -> None:
    cache = _cache(ws, 2, 2, 3, 10, 4)
    k1, v1 = _kv(4)
    out = call(cache.update, 0, k1, v1)
    if not isinstance(out, tuple) or len(out) != 2:
        raise CheckFailed("update should return two tensors: all keys and all values so far")
    if isinstance(out[0], torch.Tensor) and tuple(out[0].shape) == (2, 3, 10, 4):
        raise CheckFailed("update returned the whole buffer of max_len positions: return only the filled ones, "
                          "[:, :, :pos + T]")
    expect_tensor(out[0], (2, 3, 4, 4), "update's keys, for 4 new positions into an empty cache,")
    if not (close(out[0], k1) and close(out[1], v1)):
        raise CheckFailed("update on an empty cache should return exactly the keys and values it was given")
    if cache.pos != 0:
        raise CheckFailed(f"update moved pos to {cache.pos}: only advance(T), called once per forward pass after "
                          "every layer, moves it")
    call(cache.advance, 4)
    if cache.pos != 4:
        raise CheckFailed(f"after advance(4) pos should be 4, found {cache.pos}")
    k2, v2 = _kv(1)
    out = call(cache.update, 0, k2, v2)
    if isinstance(out[0], torch.Tensor) and tuple(out[0].shape) == (2, 3, 1, 4):
        raise CheckFailed("update returned only the new keys: return every key so far (cached and new), so the "
                          "new token can attend to the past")
    expect_tensor(out[0], (2, 3, 5, 4), "update's keys, for 1 new position after 4 cached,")
    if not (close(out[0], torch.cat([k1, k2], 2)) and close(out[1], torch.cat([v1, v2], 2))):
        if close(out[0][:, :, :1], k2):
            raise CheckFailed("the new keys overwrote the first position: write them at positions pos .. pos + T")
        raise CheckFailed("after advance, update should return the cached keys followed by the new ones "
                          "(concatenated along the sequence axis, dim 2)")


@CHECKS.add("KVCache", "layers are kept apart, and only advance moves pos")
def cache_layers(ws: Workspace) -> None:
    cache = _cache(ws, 2, 2, 3, 10, 4)
    (k0, v0), (k1, v1) = _kv(3), _kv(3)
    call(cache.update, 0, k0, v0)
    if cache.pos != 0:
        raise CheckFailed("update moved pos: with several layers, the next layer would write after this one's "
                          "keys; only advance(T), called once per forward pass, moves pos")
    out1 = call(cache.update, 1, k1, v1)
    expect_tensor(out1[0], (2, 3, 3, 4), "update of layer 1")
    if not close(out1[0], k1):
        raise CheckFailed("layer 1 got layer 0's keys: keep one store per layer")
    call(cache.advance, 3)
    out0 = call(cache.update, 0, *_kv(1))
    if not close(out0[0][:, :, :3], k0):
        raise CheckFailed("layer 0's cached keys changed when layer 1 was written: keep one store per layer")


@CHECKS.add("KVCache", "inside llmlab's decoder: prefill, then one token at a time, equals the full forward pass")
def cache_in_model(ws: Workspace) -> None:
    model = _model()
    c = model.config
    idx = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        full = model(idx)  # (B, T, V)
        cache = _cache(ws, c.n_layer, 2, c.n_kv_head, 12, c.head_dim)
        first = model(idx[:, :6], kv_cache=cache)
        if not close(first, full[:, :6], atol=1e-4):
            raise CheckFailed("with your cache, the prompt's own logits differ from a forward pass without it")
        for t in range(6, 12):
            step = model(idx[:, t:t + 1], kv_cache=cache)
            if not close(step[:, 0], full[:, t], atol=1e-4):
                raise CheckFailed(f"the logits of position {t}, computed with your cache from one new token, differ "
                                  "from the full forward pass: does update return every earlier key and value?")


def _counting(model: Transformer) -> tuple[list[int], object]:
    seen: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0] if args else kwargs["idx"]).shape[1]), with_kwargs=True)
    return seen, handle


@torch.no_grad()
def _last_token_only(model: Transformer, idx: torch.Tensor, n: int) -> torch.Tensor:
    """The mistake of running only the newest token each step with no cache: the model forgets the context."""
    new, out = idx, []
    for _ in range(n):
        new = model(new)[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        out.append(new)
    return torch.cat(out, 1)  # (B, n)


@CHECKS.add("greedy_decode", "gives llmlab's greedy tokens, with and without the cache, for a batch")
def decode_tokens(ws: Workspace) -> None:
    model = _model(1)
    idx = torch.randint(0, 64, (2, 5))
    expected = torch.tensor(generate_batch(model, idx.tolist(), 10, temperature=0.0, use_cache=False))  # (B, 10)
    for use_cache in (False, True):
        with torch.no_grad():
            out = call(ws.get("greedy_decode"), model, idx.clone(), 10, use_cache=use_cache)
        out = expect_tensor(torch.as_tensor(out), (2, 10), f"greedy_decode(..., use_cache={use_cache})")
        if not torch.equal(out.long(), expected):
            hint = "pick the argmax of the last position's logits each step"
            if not use_cache and torch.equal(out.long(), _last_token_only(model, idx, 10)):
                hint = "without a cache, each step runs the whole sequence so far, not only the newest token"
            raise CheckFailed(f"with use_cache={use_cache} the tokens differ from llmlab's greedy decoding: {hint}")


@CHECKS.add("greedy_decode", "with the cache, the model sees the prompt once and then one token per step")
def decode_uses_cache(ws: Workspace) -> None:
    model = _model(2)
    idx = torch.randint(0, 64, (1, 5))
    seen, handle = _counting(model)
    error = None
    try:
        with torch.no_grad():
            call(ws.get("greedy_decode"), model, idx, 6, use_cache=True)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as e:  # feeding the whole sequence into a cache overflows it: the counts say why
        error = e
    finally:
        handle.remove()
    if error is not None and (len(seen) < 2 or all(n != 1 for n in seen[1:])):
        raise CheckFailed(f"the model saw {seen} tokens per call, then {type(error).__name__}: with a cache, "
                          "run the prompt once, then only the newest token each step")
    if error is not None:
        raise error
    if not seen:
        raise CheckFailed("greedy_decode never called the model")
    if seen[0] != 5 or any(n != 1 for n in seen[1:]):
        raise CheckFailed(f"the model saw {seen} tokens per call; with a cache it should see the prompt (5) once, "
                          "then only the newest token (1) each step")
    if len(seen) > 6:
        raise CheckFailed(f"{len(seen)} forward calls for 6 new tokens: one call per token is enough")
