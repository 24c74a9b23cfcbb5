"""Log-likelihood of continuations and of whole texts, token for token as lm-evaluation-harness scores them.

Every multiple-choice benchmark and every perplexity figure reduces to two questions:

- `loglikelihood(lm, [(context, continuation)])`: log P(continuation | context), summed over the
  continuation's tokens, and whether greedy decoding would have produced exactly those tokens;
- `loglikelihood_rolling(lm, [text])`: log P(text), every token scored once, in windows the model fits.

Tokenisation follows lm-eval's `TemplateLM._encode_pair` and `HFLM._loglikelihood_tokens`
(lm_eval/api/model.py, lm_eval/models/huggingface.py), so the numbers agree to float precision:
the context's trailing whitespace moves to the continuation ("Answer: " + "Paris" is scored as
"Answer:" + " Paris", the way BPE cuts the joined text); the pair is encoded joined and split at the
context's token count; an empty context becomes the prefix token (BOS, else EOS); a pair longer than
the window loses tokens on the left; special-token text ("<|endoftext|>") is the special token, as
Hugging Face tokenizers read it. llmlab tokenizers never add BOS by themselves, like Hugging Face
tokenizers without a BOS post-processor (GPT-2, SmolLM2, Qwen); for a model whose HF tokenizer
prepends BOS (Llama), lm-eval's `hf` backend scores with that one more token of context.
One known difference: lm-eval's logits cache (on by default) runs requests whose context +
continuation[:-1] are the same tokens once, and takes a shorter continuation's log-probs from the
*first* positions of the longest one's, not the last (lm_eval 0.4.13, `Collator.get_cache`); rare in
benchmarks, possible in rolling windows over repetitive text. Here every request is scored on its own.

Batching: requests with the same context share one model row: the context once, then every
continuation, each seeing the context and itself only (an attention mask, and positions that carry on from
the context's, `pack_row`), so four answers to a 40-token question cost 40 + their own tokens, not
four times 40. Rows are sorted longest first (as lm-eval does), right-padded (causal attention never
looks right, so padding needs no mask), and the model projects only the positions that predict a
scored token (`logits_mask`): a 3-token answer costs 3 rows of the vocabulary matmul, not 43.

Not here: choosing among answers (`multiple_choice.py`), perplexity units (`perplexity.py`),
lm-eval's request objects (`lm_eval_bridge.py`).
"""

import torch
from tqdm import tqdm

from llmlab.common import log
from llmlab.common.errors import UserError

Pair = tuple[list[int], list[int]]  # (context ids, continuation ids)
Row = tuple[list[int], list[list[int]]]  # (context ids, continuations scored after it in one model row)


def tokenizer_of(lm):
    """The tokenizer of a `Pretrained`, or a UserError saying it has none."""
    if lm.tokenizer is None:
        raise UserError(f"{lm.source}: has no tokenizer, and scoring text needs one; load a model saved with it")
    return lm.tokenizer


def prefix_id(tokenizer) -> int:
    """The token an empty context is replaced by: BOS, else EOS (lm-eval's `prefix_token_id`)."""
    token = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    if token is None:
        raise UserError(f"tokenizer {tokenizer.name}: has neither a BOS nor an EOS token, so an empty "
                        "context or a rolling window has nothing to start from; give it an <|endoftext|> token")
    return token


def encode_pair(tokenizer, context: str, continuation: str) -> Pair:
    """(context ids, continuation ids), cut the way lm-eval's `TemplateLM` cuts them.

    context "Answer: ", continuation "Paris" -> encode("Answer:"), encode("Answer: Paris")[len(that):]
    (the trailing space moved over); context "" -> [prefix], encode(continuation) -- or, when the
    continuation itself starts with the prefix token, its first token becomes the context.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if context == "":  # also a context of only whitespace, where lm-eval fails an assertion
        cont = tokenizer.encode(continuation, allowed_special="all")
        start = prefix_id(tokenizer)
        return ([start], cont) if not cont or cont[0] != start else (cont[:1], cont[1:])
    ctx = tokenizer.encode(context, allowed_special="all")
    return ctx, tokenizer.encode(context + continuation, allowed_special="all")[len(ctx):]


def rolling_windows(tokens: list[int], prefix: int, max_length: int, stride: int | None = None) -> list[Pair]:
    """(context, continuation) windows scoring every token once, lm-eval's rolling windows.

    The first window predicts up to `max_length` tokens from the prefix token on; each later one
    predicts the next `stride` tokens (default `max_length`) with the window filled to `max_length`
    inputs by the tokens before them. `stride` < `max_length` gives every token more context at the
    cost of more windows; the default equals lm-eval's `get_rolling_token_windows(context_len=1)` +
    `make_disjoint_window` (`stride` = max_length - context_len + 1).

    tokens=[0..9], prefix=P, max_length=4:
        ([P], [0, 1, 2, 3]), ([3], [4, 5, 6, 7]), ([5, 6, 7], [8, 9])
    (the model sees P 0 1 2 | 3 4 5 6 | 5 6 7 8 and scores 0-3 | 4-7 | 8 9).
    """
    stride = max_length if stride is None else stride
    if not 1 <= stride <= max_length:
        raise UserError(f"stride must be between 1 and max_length ({max_length}), got {stride}")
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    windows = [([prefix], tokens[:first])]
    done = first
    while done < len(tokens):
        end = min(len(tokens), done + stride)
        windows.append((tokens[end - max_length - 1:done], tokens[done:end]))
        done = end
    return windows


def pack_row(context: list[int], continuations: list[list[int]]) -> tuple[list[int], ...]:
    """One model input scoring several continuations of one context: (ids, positions, segments, predictors).

    The context comes once, then each continuation but its last token (a last token is only
    predicted, never fed). Continuation i is segment i + 1: it sees the context and itself, not the
    other continuations, and its positions carry on from the context's. predictors[i] are the
    positions whose logits predict continuation i's tokens.

    context [5, 6], continuations [[7, 8], [9], [3, 4, 2]] ->
        ids        [5, 6, 7, 3, 4]
        positions  [0, 1, 2, 2, 3]
        segments   [0, 0, 1, 3, 3]
        predictors [[1, 2], [1], [1, 3, 4]]
    """
    ids, positions, segments, predictors = list(context), list(range(len(context))), [0] * len(context), []
    for i, cont in enumerate(continuations, start=1):
        start = len(ids)
        ids += cont[:-1]
        positions += range(len(context), len(context) + len(cont) - 1)
        segments += [i] * (len(cont) - 1)
        predictors.append([len(context) - 1, *range(start, len(ids))])
    return ids, positions, segments, predictors


@torch.no_grad()
def score_rows(model: torch.nn.Module, rows: list[Row]) -> list[list[tuple[float, bool]]]:
    """One forward pass: for each (context, continuations) row, each continuation's summed log-prob and
    whether greedy decoding gives it.

    Rows are packed (`pack_row`) and right-padded; when a row holds several continuations with more
    than one token, a (B, T, T) mask keeps them from seeing each other. Only the predicting positions
    are projected to the vocabulary. context [5, 6], continuations [[7, 8], [9]]:
        [7, 8] -> (log p(7 | 5 6) + log p(8 | 5 6 7), argmax after 5 6 is 7 and after 5 6 7 is 8)
        [9]    -> (log p(9 | 5 6), argmax after 5 6 is 9)
    """
    device = next(model.parameters()).device
    packed = [pack_row(ctx, conts) for ctx, conts in rows]
    B, T = len(rows), max(len(ids) for ids, *_ in packed)
    idx = torch.zeros(B, T, dtype=torch.long)  # right padding with id 0
    positions = torch.zeros(B, T, dtype=torch.long)
    segments = torch.full((B, T), -1)  # -1: padding
    keep = torch.zeros(B, T, dtype=torch.bool)  # the positions projected to the vocabulary
    for b, (ids, pos, seg, predictors) in enumerate(packed):
        idx[b, :len(ids)] = torch.tensor(ids)
        positions[b, :len(ids)] = torch.tensor(pos)
        segments[b, :len(ids)] = torch.tensor(seg)
        for p in predictors:
            keep[b, p] = True
    kwargs = {}
    if (segments > 1).any():  # continuations side by side: each sees the context and itself only
        allowed = (segments[:, :, None] == segments[:, None, :]) | (segments[:, None, :] == 0)  # (B, T, T)
        kwargs = {"attn_mask": allowed.to(device), "positions": positions.to(device)}
    logits = model(idx.to(device), logits_mask=keep.to(device), **kwargs)  # (N, V)
    logit_row = (keep.flatten().cumsum(0) - 1).view(B, T)  # (B, T): the logits row of each kept position
    where, tok = [], []  # the logits row and the token of every scored prediction
    for b, ((_, conts), (*_, predictors)) in enumerate(zip(rows, packed, strict=True)):
        for cont, p in zip(conts, predictors, strict=True):
            where += logit_row[b, p].tolist()
            tok += cont
    where_t, tok_t = torch.tensor(where, device=device), torch.tensor(tok, device=device)
    # log-softmax of only the gathered entries; chunks keep the float32 temporaries small
    norm = torch.cat([c.float().logsumexp(-1) for c in logits.split(4096)])  # (N,)
    logprobs = (logits[where_t, tok_t].float() - norm[where_t]).tolist()
    hits = (logits.argmax(-1)[where_t] == tok_t).tolist()
    out, start = [], 0
    for _, conts in rows:
        row_out = []
        for cont in conts:
            end = start + len(cont)
            row_out.append((sum(logprobs[start:end]), all(hits[start:end])))
            start = end
        out.append(row_out)
    return out


def pack_pairs(pairs: list[Pair], max_length: int) -> list[tuple[list[int], list[tuple[int, list[int]]]]]:
    """Rows of (context, [(pair index, continuation)]): pairs sharing a context share a row while it fits.

    Pairs longer than max_length + 1 tokens lose tokens on the left first (the model sees at most
    max_length; the last token is only predicted), so their context is the truncated one.
    """
    by_context: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for i, (ctx, cont) in enumerate(pairs):
        if cont:  # an empty continuation has nothing to predict: log-prob 0, trivially greedy
            full = (ctx + cont)[-(max_length + 1):]
            by_context.setdefault(tuple(full[:-len(cont)]), []).append((i, cont))
    rows = []
    for ctx, members in by_context.items():
        row, length = [], len(ctx)
        for i, cont in members:
            if row and length + len(cont) - 1 > max_length:
                rows.append((list(ctx), row))
                row, length = [], len(ctx)
            row.append((i, cont))
            length += len(cont) - 1
        rows.append((list(ctx), row))
    return rows


def row_length(row: tuple[list[int], list[tuple[int, list[int]]]]) -> int:
    """Tokens a packed row feeds the model: the context, then each continuation but its last token."""
    ctx, members = row
    return len(ctx) + sum(len(cont) - 1 for _, cont in members)


def batches(rows: list, batch_size: int, max_tokens: int) -> list[list]:
    """Runs of consecutive longest-first rows, each at most `batch_size` rows and `max_tokens` padded tokens.

    Row lengths [9, 5, 5, 2], batch_size 3, max_tokens 10 -> [[9], [5, 5], [2]]
    (the 2 would make three rows padded to 5: 15 tokens).
    """
    out: list[list] = []
    for row in rows:
        if not out or len(out[-1]) == batch_size or (len(out[-1]) + 1) * row_length(out[-1][0]) > max_tokens:
            out.append([])
        out[-1].append(row)
    return out


def score_pairs(model: torch.nn.Module, pairs: list[Pair], max_length: int, batch_size: int = 16,
                progress: bool = False, names: list[str] | None = None,
                max_batch_tokens: int = 16384) -> list[tuple[float, bool]]:
    """(log-prob, is greedy) of each pair's continuation ids after its context ids, batched.

    Pairs are packed into rows by context (`pack_pairs`), rows sorted longest first (as lm-eval
    does, so the padding in each batch is small), and run `batch_size` rows at a time, fewer when
    they would pass `max_batch_tokens`: a batch of full windows projects every position, and 16
    windows of 8192 tokens over a 49k vocabulary would be 26 GB of logits. `names` say which
    request a pair came from, for errors.
    """
    if max_length > model.config.seq_len:
        raise UserError(f"max_length {max_length} is longer than the model's context window "
                        f"({model.config.seq_len})")
    for i, (_, cont) in enumerate(pairs):
        if len(cont) > max_length:
            where = names[i] if names else f"pair {i}"
            raise UserError(f"{where}: the continuation is {len(cont)} tokens, longer than max_length "
                            f"({max_length}); shorten it or score it with loglikelihood_rolling")
    truncated = sum(len(ctx) + len(cont) > max_length + 1 for ctx, cont in pairs)
    if truncated:
        log.info(f"loglikelihood: {truncated} request(s) longer than {max_length} tokens lost tokens on the left")
    rows = sorted(pack_pairs(pairs, max_length), key=row_length, reverse=True)
    results: list[tuple[float, bool]] = [(0.0, True)] * len(pairs)
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches(rows, batch_size, max_batch_tokens), desc="loglikelihood", disable=not progress):
            scores = score_rows(model, [(ctx, [cont for _, cont in members]) for ctx, members in batch])
            for (_, members), row_scores in zip(batch, scores, strict=True):
                for (i, _), score in zip(members, row_scores, strict=True):
                    results[i] = score
    finally:
        model.train(was_training)
    return results


def loglikelihood(lm, requests: list[tuple[str, str]], batch_size: int = 16, progress: bool = False,
                  max_length: int | None = None) -> list[tuple[float, bool]]:
    """(log P(continuation | context) in nats, whether greedy decoding gives the continuation) per request.

    `lm` is an `llmlab.infer.pretrained.Pretrained`; max_length defaults to its context window.
    An empty continuation scores (0.0, True); one whose text the tokenizer joins to the context's
    last token ("x" + "y" as the one token "xy") has nothing to score and is an error.
    """
    tokenizer = tokenizer_of(lm)
    pairs = []
    for i, request in enumerate(requests):
        if not (isinstance(request, tuple | list) and len(request) == 2 and all(isinstance(s, str) for s in request)):
            raise UserError(f"requests[{i}]: expected a (context, continuation) pair of strings, got {request!r}")
        pairs.append(encode_pair(tokenizer, *request))
        if request[1] and not pairs[-1][1]:  # lm-eval fails an assertion here
            raise UserError(f"requests[{i}]: the continuation {request[1]!r} has no tokens of its own (the "
                            "tokenizer merges it into the context's last token); start it with a space")
    return score_pairs(lm.model, pairs, max_length or lm.model.config.seq_len, batch_size, progress,
                       [f"requests[{i}]" for i in range(len(pairs))])


def loglikelihood_rolling(lm, texts: list[str], max_length: int | None = None, stride: int | None = None,
                          batch_size: int = 16, progress: bool = False) -> list[float]:
    """log P(text) in nats per text, each token scored once in `rolling_windows` (lm-eval's by default).

    The first token is predicted from the prefix token (BOS, else EOS); an empty text scores 0.0.
    """
    if isinstance(texts, str):
        raise UserError("texts: expected a list of strings; wrap a single text in a list")
    tokenizer = tokenizer_of(lm)
    max_length = max_length or lm.model.config.seq_len
    start = prefix_id(tokenizer)
    pairs, owner = [], []
    for i, text in enumerate(texts):
        windows = rolling_windows(tokenizer.encode(text, allowed_special="all"), start, max_length, stride)
        pairs += windows
        owner += [i] * len(windows)
    totals = [0.0] * len(texts)
    for i, (logprob, _) in zip(owner, score_pairs(lm.model, pairs, max_length, batch_size, progress), strict=True):
        totals[i] += logprob
    return totals
