"""Lab: ngram-and-backprop, the checks. The n-gram references are llmlab's own counts and add-k model
(`llmlab.fundamentals.ngram`); the backward passes are compared with torch.autograd through
torch.nn.functional in float64. Typical slips (no BOS padding, k once instead of k V in the denominator, log2,
a missing residual, the mean's share of LayerNorm's gradient) are computed and named when matched.
"""

import math
import random
from collections import Counter
from functools import partial

import torch
import torch.nn.functional as F

from llmlab.fundamentals import backprop as bp
from llmlab.fundamentals import ngram
from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor

CHECKS = CheckList()
BOS, UNK = ngram.BOS, ngram.UNK
TRAIN = ["the cat sat on the mat", "a hat"]


# ---- count_ngrams ------------------------------------------------------------------------------------------

def _counts(texts: list[str], n: int, pad: int | None = None, joined: bool = False, drop_last: bool = False) -> dict:
    """Counts of n-grams, with one knob per typical mistake; the defaults give the right answer."""
    out: Counter = Counter()
    for t in ["".join(texts)] if joined else texts:
        s = BOS * (n - 1 if pad is None else pad) + t
        out.update(s[i:i + n] for i in range(len(s) - n + 1 - drop_last))
    return dict(out)


def _as_counts(out, n: int, what: str) -> dict[str, int]:
    if not isinstance(out, dict):
        raise CheckFailed(f"{what} returned {type(out).__name__}, not a dict" +
                          (": did you forget `return`?" if out is None else ""))
    bad = next((g for g in out if not isinstance(g, str) or len(g) != n), None)
    if bad is not None:
        raise CheckFailed(f"{what} has the key {bad!r}: keys are strings of n = {n} characters (context + next)")
    return {g: int(c) for g, c in out.items() if c}


@CHECKS.add("count_ngrams", "BOS-padded counts of every n-gram of each text, for n = 1, 2, 3, 4")
def counts_values(ws: Workspace) -> None:
    rng = random.Random(0)
    cases = [(["abab"], 2), (["aab"], 1), (["hello world", "hi"], 3), (["a"], 3), (["", "xy"], 2),
             (["".join(rng.choice("ab c") for _ in range(60)) for _ in range(3)], 4)]
    for texts, n in cases:
        out = _as_counts(call(ws.get("count_ngrams"), list(texts), n), n, f"count_ngrams({texts!r}, {n})")
        want = dict(ngram.count_ngrams(texts, n).raw[n])
        if out == want:
            continue
        for message, wrong in {
            "pad each text on the left with n - 1 BOS: then its first characters are counted too, after "
            "their 'start of text' context": _counts(texts, n, pad=0),
            "pad with n - 1 BOS, not n: you count an n-gram of BOS alone, but BOS is never predicted":
                _counts(texts, n, pad=n),
            "count each text on its own: an n-gram never spans two texts": _counts(texts, n, joined=True),
            "the last n-gram of each text is missing: count the one ending at the last character too":
                _counts(texts, n, drop_last=True),
        }.items():
            if out == {g: c for g, c in wrong.items() if c}:
                raise CheckFailed(message)
        gram = next(g for g in sorted(set(out) | set(want)) if out.get(g, 0) != want.get(g, 0))
        raise CheckFailed(f"count_ngrams({texts!r}, {n}): {gram!r} counted {out.get(gram, 0)} times, expected "
                          f"{want.get(gram, 0)}")


# ---- NgramModel --------------------------------------------------------------------------------------------

def _model(ws: Workspace, texts: list[str], n: int, k: float):
    m = call(ws.get("NgramModel"), list(texts), n, k=k)
    want = ngram.count_ngrams(texts, n).vocab
    vocab = getattr(m, "vocab", None)
    if vocab is None:
        raise CheckFailed("NgramModel has no self.vocab")
    if list(vocab) != want:
        hint = ("it must include UNK, for characters training never saw" if UNK not in vocab else
                "BOS is context only, never in the vocabulary" if BOS in vocab else
                "sort it: sorted(set of characters + UNK)" if sorted(vocab) == want else "")
        raise CheckFailed(f"self.vocab is {list(vocab)[:6]}...; expected sorted(training characters + UNK): {hint}")
    return m


def _probs_first(m, texts: list[str], n: int, k: float) -> None:
    """nll and sample build on probs: say so when probs itself is wrong."""
    ref = ngram.NgramLM(ngram.count_ngrams(texts, n), n, smoothing="addk", k=k)
    for context in (BOS * (n - 1), BOS * (n - 1) + texts[0]):
        out = call(m.probs, context)
        if not isinstance(out, torch.Tensor) or not close(out, torch.tensor(ref.distribution(context)), atol=1e-7):
            raise CheckFailed("probs differs from add-k smoothing: make the probs check pass first")


def _addk(texts: list[str], n: int, k: float, h: str, denominator: str = "kV", smooth_top: bool = True):
    """Add-k probabilities of every vocab character after context h, with knobs for typical mistakes."""
    counts = ngram.count_ngrams(texts, n)
    grams, V = counts.raw[n], len(counts.vocab)
    total = sum(c for g, c in grams.items() if g[:-1] == h)
    below = total + (k * V if denominator == "kV" else k)
    return torch.tensor([(grams.get(h + w, 0) + (k if smooth_top else 0.0)) / below for w in counts.vocab],
                        dtype=torch.float64)


@CHECKS.add("NgramModel", "vocab with UNK; probs is add-k on the last n - 1 characters, sums to 1 (n = 1, 2, 3)")
def model_probs(ws: Workspace) -> None:
    for n in (1, 2, 3):
        for k in (1.0, 0.01):
            m = _model(ws, TRAIN, n, k)
            ref = ngram.NgramLM(ngram.count_ngrams(TRAIN, n), n, smoothing="addk", k=k)
            pad = BOS * (n - 1)
            for context in (pad, pad + "the ca", pad + "on the m", pad + "xqz"):
                out = expect_tensor(call(m.probs, context), (len(m.vocab),),
                                    f"probs({context!r}) of an order-{n} model")
                h = context[len(context) - n + 1:]
                mistakes = {
                    "your probabilities do not sum to 1: the denominator is c(h) + k V, k once for each of the "
                    "V characters": _addk(TRAIN, n, k, h, denominator="k"),
                    "an unseen character must keep k / (c(h) + k V), not 0: add k to every count":
                        _addk(TRAIN, n, k, h, smooth_top=False),
                    "h is the LAST n - 1 characters of the context": _addk(TRAIN, n, k, context[:n - 1]),
                }
                if k != 1.0:
                    mistakes["k is ignored: use the k the model was given"] = _addk(TRAIN, n, 1.0, h)
                if h in ref.tables[n]:  # a context seen in training
                    mistakes["this context was seen in training, yet you return 1 / V for every character: "
                             "use only the last n - 1 characters of the context as h"] = \
                        torch.full((len(m.vocab),), 1 / len(m.vocab), dtype=torch.float64)
                diagnose(out, torch.tensor(ref.distribution(context), dtype=torch.float64), mistakes,
                         f"probs({context!r}) of an order-{n} model with k={k} differs from add-k smoothing",
                         atol=1e-7)


def _nll_variants(texts: list[str], held_out: list[str], n: int, k: float) -> dict[str, float | tuple]:
    """The right mean nll ("right"), and what typical mistakes give: message -> a number or a tuple of them."""
    lm = ngram.NgramLM(ngram.count_ngrams(texts, n), n, smoothing="addk", k=k)
    vocab = set(lm.vocab)

    def nats(s: str, start: int) -> list[float]:
        return [-math.log(lm.prob(s[i], s[i - n + 1:i])) for i in range(start, len(s))]

    padded = [nats(BOS * (n - 1) + ngram.normalize(t, vocab), n - 1) for t in held_out]
    right = sum(map(sum, padded)) / sum(map(len, held_out))
    unpadded = [x for t in held_out for x in nats(ngram.normalize(t, vocab), n - 1)]
    joined = nats(BOS * (n - 1) + ngram.normalize("".join(held_out), vocab), n - 1)
    return {
        "right": right,
        "nll is in nats: use the natural log (math.log), not log2": right / math.log(2),
        "return the mean per character, not the sum": right * sum(map(len, held_out)),
        "the NEGATIVE log-likelihood: -log P, a positive number": -right,
        "pad each text with n - 1 BOS, so its first n - 1 characters are predicted too":
            (sum(unpadded) / max(len(unpadded), 1), sum(unpadded) / sum(map(len, held_out))),
        "average over all characters of all texts, not the mean of each text's mean":
            sum(sum(p) / len(p) for p in padded) / len(padded),
        "each text starts again from n - 1 BOS: its first characters do not see the end of the text before":
            sum(joined) / len(joined),
    }


@CHECKS.add("NgramModel", "nll: mean nats per character, each text BOS-padded, unseen characters as UNK")
def model_nll(ws: Workspace) -> None:
    for n, k, held_out in ((1, 0.5, ["the hat", "a cat on a mat sat"]), (2, 0.5, ["the hat", "a cat on a mat sat"]),
                           (3, 0.1, ["a mat", "that cat sat on a hat"]), (3, 0.1, ["the zebra"])):
        m = _model(ws, TRAIN, n, k)
        _probs_first(m, TRAIN, n, k)
        unseen = "zebra" in held_out[0]
        try:
            out = call(m.nll, list(held_out))
        except (KeyError, ValueError, IndexError) as e:
            if not unseen:
                raise
            raise CheckFailed(f"nll of 'the zebra' raised {type(e).__name__}: 'z', 'b' and 'r' never occur in "
                              "training; read a character not in vocab as UNK") from None
        if not isinstance(out, (float, int)) and not (isinstance(out, torch.Tensor) and out.numel() == 1):
            raise CheckFailed(f"nll returned {type(out).__name__}, not a number")
        variants = _nll_variants(TRAIN, held_out, n, k)
        right = variants.pop("right")
        if math.isclose(float(out), right, rel_tol=1e-5):
            continue
        if unseen:
            vocab = set(m.vocab)
            kept = ["".join(c for c in t if c in vocab) for t in held_out]
            variants = {"skip no character: one never seen in training is read as UNK, and predicted":
                        _nll_variants(TRAIN, kept, n, k)["right"]}
        for message, wrong in variants.items():
            if any(math.isclose(float(out), w, rel_tol=1e-5) for w in (wrong if isinstance(wrong, tuple) else [wrong])):
                raise CheckFailed(message)
        raise CheckFailed(f"nll({held_out!r}) of an order-{n} model is {float(out):.6g}, expected {right:.6g}")


@CHECKS.add("NgramModel", "sample: n_chars of vocab, from n - 1 BOS, drawn with probs as weights; seeded")
def model_sample(ws: Workspace) -> None:
    _probs_first(_model(ws, TRAIN, 2, 1.0), TRAIN, 2, 1.0)
    out = call(_model(ws, ["aaaaaaaaaa"], 1, 1e-9).sample, 20, seed=0)
    if not isinstance(out, str):
        raise CheckFailed(f"sample returned {type(out).__name__}, not a str")
    if out != "a" * 20:
        raise CheckFailed(f"a model of 'aaaaaaaaaa' (k = 1e-9) gives 'a' probability 1, yet sampled {out[:20]!r}: "
                          "draw with probs as the weights, not uniformly over vocab")
    out = call(_model(ws, ["abcdefghij"], 3, 1e-9).sample, 10, seed=0)
    if out != "abcdefghij":
        hint = ("start from n - 1 BOS: the first character is drawn after the context BOS * (n - 1)"
                if out[:1] != "a" else "extend the context by each character you draw")
        raise CheckFailed(f"a model of 'abcdefghij' alone (k = 1e-9) should sample that text back, gave {out!r}: "
                          f"{hint}")
    m = _model(ws, TRAIN, 2, 1.0)
    texts = [call(m.sample, 40, seed=s) for s in (0, 0, 1, 2, 3)]
    if any(not isinstance(t, str) or len(t) != 40 for t in texts):
        raise CheckFailed("sample(40) should return a str of 40 characters")
    if set("".join(texts)) - set(m.vocab):
        raise CheckFailed(f"sample drew characters outside vocab: {sorted(set(''.join(texts)) - set(m.vocab))}")
    if texts[0] != texts[1]:
        raise CheckFailed("the same seed gave two different texts: draw with random.Random(seed) (or a seeded "
                          "torch.Generator), not the global random state")
    m4 = _model(ws, ["ab", "ab", "ab", "ac"], 2, 1e-9)
    share = sum(call(m4.sample, 2, seed=s) == "ac" for s in range(300)) / 300
    if share == 0:
        raise CheckFailed("after 'a', 'c' has probability 1/4 but was never drawn: you always take the most "
                          "likely character; draw at random with probs as the weights")
    if not 0.15 < share < 0.36:
        raise CheckFailed(f"after 'a', 'c' has probability 1/4 but came {share:.0%} of the time in 300 samples")
    if len(set(texts[1:])) == 1:
        raise CheckFailed("seeds 0, 1, 2 and 3 give the same text: use the seed")


# ---- backprop ----------------------------------------------------------------------------------------------

def _grads(f, inputs: list[torch.Tensor], dout: torch.Tensor) -> list[torch.Tensor]:
    """torch.autograd's gradients of sum(f(*inputs) * dout) with respect to inputs."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    return list(torch.autograd.grad((f(*leaves) * dout).sum(), leaves))


def _parts(out, n: int, what: str) -> tuple[torch.Tensor, ...]:
    if not isinstance(out, (tuple, list)) or len(out) != n:
        raise CheckFailed(f"{what} should return {n} tensors" + (": did you forget `return`?" if out is None else ""))
    return tuple(out)


def _grad_check(name: str, out: torch.Tensor, ref: torch.Tensor, mistakes: dict, what: str) -> None:
    if isinstance(out, torch.Tensor) and out.dim() and tuple(out.shape) == tuple(ref.shape)[::-1] \
            and ref.dim() == 2 and ref.shape[0] != ref.shape[1]:
        raise CheckFailed(f"{name} has shape {tuple(out.shape)}, transposed: it must have the shape of what it "
                          f"is the gradient of, {tuple(ref.shape)}")
    if isinstance(out, torch.Tensor) and out.dim() > ref.dim() and name in ("dw", "db"):
        raise CheckFailed(f"{name} has shape {tuple(out.shape)}, expected {tuple(ref.shape)}: every leading "
                          "(batch, time) position used the same weights, so sum their gradients over those axes")
    expect_tensor(out, tuple(ref.shape), f"{what}: {name}")
    diagnose(out, ref, mistakes, f"{what}: {name} differs from torch.autograd's")


@CHECKS.add("linear_backward", "dx, dw, db equal autograd's for x @ w + b, with batch and time axes, any sizes")
def linear_grads(ws: Workspace) -> None:
    for x_shape, n_out in (((2, 5, 3), 3), ((4, 3), 6), ((1, 1, 7), 1), ((3, 2, 4), 5)):  # square w first
        x, w = torch.randn(x_shape, dtype=torch.float64), torch.randn(x_shape[-1], n_out, dtype=torch.float64)
        b, dout = torch.randn(n_out, dtype=torch.float64), torch.randn(x_shape[:-1] + (n_out,), dtype=torch.float64)
        what = f"linear_backward for x {x_shape}, w {tuple(w.shape)}"
        dx, dw, db = _parts(call(ws.get("linear_backward"), dout, x, w), 3, "linear_backward")
        rx, rw, rb = _grads(lambda x, w, b: x @ w + b, [x, w, b], dout)
        flat_x, flat_d = x.reshape(-1, x.shape[-1]), dout.reshape(-1, n_out)
        _grad_check("dx", dx, rx, {"dx = dout @ w^T: w's transpose carries dout back to x":
                                   partial(torch.matmul, dout, w)}, what)
        _grad_check("dw", dw, rw, {"dw = x^T @ dout, of w's shape (in, out); not dout^T @ x": flat_d.T @ flat_x,
                                   "dw is summed over the positions, not averaged": rw / flat_x.shape[0]}, what)
        _grad_check("db", db, rb, {"db is summed over the positions, not averaged": rb / flat_x.shape[0]}, what)


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


@CHECKS.add("gelu_backward", "equals autograd's gradient of the exact GELU, x * Phi(x), for any shape")
def gelu_grads(ws: Workspace) -> None:
    for shape in ((101,), (2, 3, 5), (1, 1)):
        x = torch.linspace(-5, 5, 101, dtype=torch.float64).reshape(shape) if shape == (101,) \
            else torch.randn(shape, dtype=torch.float64) * 2
        dout = torch.randn(shape, dtype=torch.float64)
        out = expect_tensor(call(ws.get("gelu_backward"), dout, x), shape, f"gelu_backward for x of shape {shape}")
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        (tanh_ref,) = _grads(lambda x: F.gelu(x, approximate="tanh"), [x], dout)
        diagnose(out, _grads(F.gelu, [x], dout)[0], {
            "multiply by dout: the chain rule passes on the local derivative times the gradient from above":
                _normal_cdf(x) + x * pdf,
            "you forgot the x * phi(x) term: d/dx x Phi(x) = Phi(x) + x phi(x)": dout * _normal_cdf(x),
            "you forgot the Phi(x) term: d/dx x Phi(x) = Phi(x) + x phi(x)": dout * x * pdf,
            "phi(x) is the normal density exp(-x^2 / 2) / sqrt(2 pi): the 1 / sqrt(2 pi) is missing":
                dout * (_normal_cdf(x) + x * pdf * math.sqrt(2 * math.pi)),
            "that is the tanh approximation's derivative; here GELU is the exact x * Phi(x)": tanh_ref,
        }, f"gelu_backward for x of shape {shape} differs from torch.autograd's")


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def _ln_mistakes(dout, x, w, eps) -> dict[str, torch.Tensor]:
    mean = x.mean(-1, keepdim=True)
    rstd = ((x - mean).pow(2).mean(-1, keepdim=True) + eps).rsqrt()
    xhat, dxhat = (x - mean) * rstd, dout * w
    unbiased = (x.var(-1, keepdim=True) + eps).rsqrt()
    return {
        "dx treats the mean and the variance as constants, but both depend on x: dx = rstd * (dxhat - "
        "mean(dxhat) - xhat * mean(dxhat * xhat))": rstd * dxhat,
        "dx misses the variance's share: - xhat * mean(dxhat * xhat)": rstd * (dxhat - dxhat.mean(-1, keepdim=True)),
        "dx misses the mean's share: - mean(dxhat)": rstd * (dxhat - xhat * (dxhat * xhat).mean(-1, keepdim=True)),
        "dxhat = dout * w: the weight scales xhat on the way forward, so it scales the gradient on the way back":
            rstd * (dout - dout.mean(-1, keepdim=True) - xhat * (dout * xhat).mean(-1, keepdim=True)),
        "use the biased variance, mean((x - mean)^2), as the forward does": unbiased * (
            dxhat - dxhat.mean(-1, keepdim=True) - (x - mean) * unbiased * (dxhat * (x - mean) * unbiased)
            .mean(-1, keepdim=True)),
    }


@CHECKS.add("layernorm_backward", "dx, dw, db equal autograd's through F.layer_norm; tiny and huge inputs, eps")
def layernorm_grads(ws: Workspace) -> None:
    for shape, scale, eps in (((2, 3, 8), 1.0, 1e-5), ((1, 1, 5), 3.0, 1e-5), ((4, 7), 1e-3, 1e-5),
                              ((2, 6), 1e3, 1e-5), ((3, 9), 0.1, 0.5)):
        C = shape[-1]
        x = torch.randn(shape, dtype=torch.float64) * scale + scale
        w, b = 1 + 0.5 * torch.randn(C, dtype=torch.float64), torch.randn(C, dtype=torch.float64)
        dout = torch.randn(shape, dtype=torch.float64)
        what = f"layernorm_backward for x {shape} of scale {scale:g}, eps={eps:g}"
        dx, dw, db = _parts(call(ws.get("layernorm_backward"), dout, x, w, eps=eps), 3, "layernorm_backward")
        rx, rw, rb = _grads(partial(_layer_norm, eps=eps), [x, w, b], dout)
        mistakes = _ln_mistakes(dout, x, w, eps)
        for other, message in ((0.0, "eps is missing: xhat = (x - mean) / sqrt(var + eps)"),
                               (1e-5, "use the eps you are given, not 1e-5")):
            if other != eps:
                mistakes[message] = _grads(partial(_layer_norm, w=w, b=b, eps=other), [x], dout)[0]
        _grad_check("dx", dx, rx, mistakes, what)
        xhat = (x - x.mean(-1, keepdim=True)) * ((x - x.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True)
                                                 + eps).rsqrt()
        _grad_check("dw", dw, rw, {"dw = sum of dout * xhat (the normalised x), not of dout alone":
                                   dout.reshape(-1, C).sum(0), "dw is the sum of dout * xhat, not of dout * x":
                                   (dout * x).reshape(-1, C).sum(0)}, what)
        _grad_check("db", db, rb, {"db is the sum of dout over the positions, not its mean":
                                   dout.reshape(-1, C).mean(0), "db is the sum of dout alone: xhat multiplies w, "
                                   "not b": (dout * xhat).reshape(-1, C).sum(0)}, what)


def _block_params(C: int, H: int) -> dict[str, torch.Tensor]:
    def r(*shape, mean=0.0, std=0.3):
        return mean + std * torch.randn(*shape, dtype=torch.float64)
    return {"ln.weight": r(C, mean=1.0), "ln.bias": r(C), "fc.weight": r(C, H), "fc.bias": r(H),
            "proj.weight": r(H, C), "proj.bias": r(C)}


def _block(x, p, eps):
    u = F.layer_norm(x, (x.shape[-1],), p["ln.weight"], p["ln.bias"], eps)
    return x + F.gelu(u @ p["fc.weight"] + p["fc.bias"]) @ p["proj.weight"] + p["proj.bias"]


def _block_by_names(names: list[str], x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
    return _block(x, dict(zip(names, weights, strict=True)), 1e-5)


def _block_mistakes(dout, x, p, eps) -> dict[str, dict[str, torch.Tensor]]:
    """The gradients with one slip each, from llmlab's backward functions: message -> {name: gradient}."""
    u, ln = bp.layernorm_forward(x, p["ln.weight"], p["ln.bias"], eps)
    h, _ = bp.linear_forward(u, p["fc.weight"], p["fc.bias"])
    a, _ = bp.gelu_forward(h)
    da = dout @ p["proj.weight"].T  # (B, T, H)
    dh = bp.gelu_backward(da, bp.gelu_forward(h)[1])
    dh_at_output = bp.gelu_backward(da, bp.gelu_forward(a)[1])

    def flat(t):
        return t.reshape(-1, t.shape[-1])  # (B*T, ...)

    return {
        "gelu_backward needs the GELU's input h = ln(x) @ w1 + b1, not its output a = gelu(h)":
            {"fc.weight": flat(u).T @ flat(dh_at_output), "fc.bias": flat(dh_at_output).sum(0)},
        "fc's input is layernorm(x), not x: dw1 = u^T @ dh with u = layernorm(x)": {"fc.weight": flat(x).T @ flat(dh)},
        "proj's input is a = gelu(h), not h: dw2 = a^T @ dout": {"proj.weight": flat(h).T @ flat(dout)},
        "the residual y = x + ... passes dout straight to x as well: add dout to dx":
            {"x": bp.layernorm_backward(dh @ p["fc.weight"].T, ln)[0]},
    }


@CHECKS.add("mlp_block_backward", "every gradient of x + gelu(ln(x) @ w1 + b1) @ w2 + b2 equals autograd's")
def block_grads(ws: Workspace) -> None:
    for (B, T, C), H in (((2, 3, 8), 32), ((1, 1, 4), 6), ((3, 5, 7), 10)):
        x, p = torch.randn(B, T, C, dtype=torch.float64), _block_params(C, H)
        dout = torch.randn(B, T, C, dtype=torch.float64)
        out = call(ws.get("mlp_block_backward"), dout, x, dict(p), eps=1e-5)
        if not isinstance(out, dict):
            raise CheckFailed(f"mlp_block_backward returned {type(out).__name__}, not a dict of gradients")
        missing = [name for name in ["x", *p] if name not in out]
        if missing:
            raise CheckFailed(f"return a gradient for x and for every weight: {', '.join(missing)} missing")
        names = list(p)
        ref = dict(zip(["x", *names], _grads(partial(_block_by_names, names), [x, *p.values()], dout), strict=True))
        mistakes = _block_mistakes(dout, x, p, 1e-5)
        for name in ["proj.weight", "proj.bias", "fc.weight", "fc.bias", "ln.weight", "ln.bias", "x"]:
            what = f"for x {(B, T, C)} and H = {H}, the gradient of {name}"
            expect_tensor(out[name], tuple(ref[name].shape), what)
            diagnose(out[name], ref[name], {m: g[name] for m, g in mistakes.items() if name in g},
                     f"{what} differs from torch.autograd's")
