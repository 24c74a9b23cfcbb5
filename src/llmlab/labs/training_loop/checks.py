"""Lab: training-loop, the checks. References: F.cross_entropy, torch.optim.AdamW, torch's clip_grad_norm_,
llmlab's `lr_at` and llmlab's `train_loop` (which `train_step` and `train` must match step for step, on a
tiny llmlab decoder, with plain SGD so that every factor in the gradient shows). Typical mistakes (no shift,
L2 instead of decoupled decay, per-tensor clipping, summed micro-batches) are computed and named when matched.
"""

import math

import torch
import torch.nn.functional as F

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor
from llmlab.models import Transformer, get_preset
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.objectives import causal_lm_loss
from llmlab.train.optim import lr_at

CHECKS = CheckList()


# ---- next_token_loss -------------------------------------------------------------------------------------

def _ce(logits, tokens, ignore_index=-100, shift=1, reduction="mean"):
    """Cross-entropy of logits[:, t] against tokens[:, t + shift]; shift 0 and -1 are the typical mistakes."""
    T = tokens.shape[1]
    logits, targets = {1: (logits[:, :-1], tokens[:, 1:]), 0: (logits, tokens),
                       -1: (logits[:, 1:], tokens[:, :T - 1])}[shift]
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index,
                           reduction=reduction)


def _loss_mistakes(logits, tokens, ignore_index):
    kept = (tokens[:, 1:] != ignore_index).float()  # (B, T - 1)
    per_row = _ce(logits, tokens, ignore_index, reduction="none").view(kept.shape)
    return {
        "no shift: position t's logits predict token t + 1, so compare logits[:, :-1] with tokens[:, 1:]":
            lambda: _ce(logits, tokens, ignore_index, shift=0),
        "shifted the wrong way: logits[:, :-1] predict tokens[:, 1:] (you compared logits[:, 1:] with "
        "tokens[:, :-1])": lambda: _ce(logits, tokens, ignore_index, shift=-1),
        "you return the sum: return the mean over the targets": _ce(logits, tokens, ignore_index, reduction="sum"),
        "you divide by every position, ignored ones too: the mean is over the targets not ignored":
            per_row.sum() / kept.numel(),
        "you average each row, then the rows: average over all targets at once":
            (per_row.sum(1) / kept.sum(1).clamp(min=1)).mean(),
        "the targets equal to ignore_index still count: pass ignore_index on (F.cross_entropy(..., "
        "ignore_index=ignore_index))": lambda: _ce(logits, tokens, -100 if ignore_index != -100 else -1),
    }


def _loss(ws, logits, tokens, **kwargs):
    out = call(ws.get("next_token_loss"), logits, tokens, **kwargs)
    return expect_tensor(out, (), f"next_token_loss for logits {tuple(logits.shape)}")


@CHECKS.add("next_token_loss", "position t predicts token t + 1: the mean cross-entropy over B * (T - 1) targets")
def loss_shift(ws: Workspace) -> None:
    logits, tokens = torch.randn(3, 7, 11), torch.randint(0, 11, (3, 7))
    out = _loss(ws, logits, tokens)
    diagnose(out, _ce(logits, tokens), _loss_mistakes(logits, tokens, -100),
             "differs from F.cross_entropy(logits[:, :-1], tokens[:, 1:])")


@CHECKS.add("next_token_loss", "targets equal to ignore_index count neither in the sum nor in the mean")
def loss_ignore(ws: Workspace) -> None:
    for ignore_index in (-100, 0):
        tokens = torch.randint(1, 11, (4, 9))
        tokens[torch.rand(4, 9) < 0.3] = ignore_index
        tokens[1, 1:] = ignore_index  # a row with no target at all
        logits = torch.randn(4, 9, 11)
        out = _loss(ws, logits, tokens, ignore_index=ignore_index)
        diagnose(out, _ce(logits, tokens, ignore_index), _loss_mistakes(logits, tokens, ignore_index),
                 f"wrong with ignore_index={ignore_index}")


@CHECKS.add("next_token_loss", "every shape, huge logits, a float32 loss for bf16 logits, autograd's gradient")
def loss_shapes(ws: Workspace) -> None:
    for B, T, V, scale in ((1, 2, 5, 1.0), (2, 9, 3, 1.0), (4, 3, 50, 1e4)):
        logits, tokens = (torch.randn(B, T, V) * scale).requires_grad_(), torch.randint(0, V, (B, T))
        out = call(ws.get("next_token_loss"), logits, tokens)
        if isinstance(out, torch.Tensor) and out.shape == () and not torch.isfinite(out):
            raise CheckFailed("NaN or inf for huge logits: log(softmax) overflows; use F.cross_entropy or "
                              "log_softmax, which subtract the maximum first")
        expected = _ce(logits, tokens)
        if not close(expect_tensor(out, (), f"next_token_loss for logits {(B, T, V)}"), expected):
            raise CheckFailed(f"wrong for logits of shape {(B, T, V)}: sizes hard-coded?")
        ours = torch.autograd.grad(out, logits)[0]
        if not close(ours, torch.autograd.grad(expected, logits)[0]):
            raise CheckFailed("the gradient with respect to the logits differs from autograd's through "
                              "F.cross_entropy")
    logits, tokens = torch.randn(2, 6, 40).bfloat16(), torch.randint(0, 40, (2, 6))
    out = _loss(ws, logits, tokens)
    if out.dtype in (torch.bfloat16, torch.float16):
        raise CheckFailed(f"your loss is {out.dtype} for bfloat16 logits: upcast the logits first "
                          "(logits.float()); a bf16 loss keeps only about 3 significant digits")
    if not close(out, _ce(logits, tokens), rtol=1e-3, atol=1e-3):
        raise CheckFailed("for bfloat16 logits the loss is off by more than float32 rounding: upcast the "
                          "logits before the softmax, not only the result")


# ---- AdamW -----------------------------------------------------------------------------------------------

def _grads(shapes, steps: int, scale: float, seed: int = 1) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) * scale for s in shapes] for _ in range(steps)]


def _run(make, shapes, grads, lr_after: dict | None = None) -> torch.Tensor:
    """Parameters of `shapes` (the last without a gradient if `grads` has fewer) after one step per entry of
    `grads`, with the optimizer `make(params)`; `lr_after`: {step: factor} multiplies every group's lr."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    opt = make(params)
    for t, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads, strict=False):
            p.grad = g.clone()
        opt.step()
        for group in opt.param_groups:
            group["lr"] *= (lr_after or {}).get(t, 1.0)
    return torch.cat([p.detach().flatten() for p in params])


def _by_hand(shapes, grads, lr, betas, eps, wd, decay="decoupled", correct="mv", eps_at="after", average=True):
    """AdamW written out with one knob per typical mistake; the defaults are the right answer."""
    b1, b2 = betas
    torch.manual_seed(0)
    params = [torch.randn(s) for s in shapes]
    m, v = [torch.zeros(s) for s in shapes], [torch.zeros(s) for s in shapes]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            p = params[i]
            if decay == "l2":
                g = g + wd * p
            elif decay == "decoupled":
                p = p * (1 - lr * wd)
            elif decay == "without lr":
                p = p * (1 - wd)
            m[i] = b1 * m[i] + (1 - b1 if average else 1.0) * g
            v[i] = b2 * v[i] + (1 - b2 if average else 1.0) * g * g
            c1, c2 = 1 - b1 ** t if "m" in correct else 1.0, 1 - b2 ** t if "v" in correct else 1.0
            denom = {"after": (v[i] / c2).sqrt() + eps, "inside": (v[i] / c2 + eps).sqrt(),
                     "before": (v[i].sqrt() + eps) / math.sqrt(c2)}[eps_at]
            params[i] = p - lr * (m[i] / c1) / denom
    return torch.cat([p.flatten() for p in params])


def _adamw(ws, **kwargs):
    return lambda params: call(ws.get("AdamW"), params, **kwargs)


def _check_finite(out: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(out).all():
        raise CheckFailed("NaN or inf after a step: is t counted from 1? At t = 0 the bias correction "
                          "1 - beta^t is 0")
    return out


@CHECKS.add("AdamW", "five steps equal torch.optim.AdamW (decoupled decay, bias correction)")
def adamw_steps(ws: Workspace) -> None:
    shapes, lr, wd = [(4, 3), (5,)], 1e-2, 0.1
    grads = _grads(shapes, 5, 1.0)
    out = _check_finite(_run(_adamw(ws, lr=lr, weight_decay=wd), shapes, grads))
    knob = {"shapes": shapes, "grads": grads, "lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "wd": wd}
    diagnose(out, _run(lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=wd), shapes, grads), {
        "the weight decay goes through the gradient (Adam's L2): AdamW decays the weights directly, "
        "p -= lr * weight_decay * p": lambda: _by_hand(**knob, decay="l2"),
        "the decay is not multiplied by lr: p -= lr * weight_decay * p": lambda: _by_hand(**knob, decay="without lr"),
        "no weight decay: AdamW also does p -= lr * weight_decay * p": lambda: _by_hand(**knob, decay="none"),
        "no bias correction: divide m by 1 - beta1^t and v by 1 - beta2^t": lambda: _by_hand(**knob, correct=""),
        "no bias correction of m: divide it by 1 - beta1^t": lambda: _by_hand(**knob, correct="v"),
        "no bias correction of v: divide it by 1 - beta2^t": lambda: _by_hand(**knob, correct="m"),
        "m and v are sums, not averages: m = beta1 * m + (1 - beta1) * g, v likewise with g^2":
            lambda: _by_hand(**knob, average=False),
        "betas swapped: beta1 (0.9) is for m, beta2 (0.999) for v":
            lambda: _run(lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=wd, betas=(0.999, 0.9)), shapes, grads),
    }, "differs from torch.optim.AdamW")


@CHECKS.add("AdamW", "param groups, an lr changed between steps, a parameter without a gradient")
def adamw_groups(ws: Workspace) -> None:
    shapes = [(3, 3), (2,), (4,)]
    grads = _grads(shapes[:2], 6, 1.0)  # the third parameter never gets a gradient

    def groups(make):
        return lambda p: make([{"params": [p[0], p[2]], "lr": 1e-2, "weight_decay": 0.1},
                               {"params": [p[1]], "lr": 3e-3, "weight_decay": 0.0}])

    out = _check_finite(_run(groups(lambda g: call(ws.get("AdamW"), g)), shapes, grads, {2: 0.5}))
    if not close(out[-4:], _run(groups(torch.optim.AdamW), shapes, grads)[-4:]):
        raise CheckFailed("a parameter without a gradient changed: skip p when p.grad is None")
    read = "read the lr from each group inside step(): a schedule sets group['lr'] every step"
    diagnose(out, _run(groups(torch.optim.AdamW), shapes, grads, {2: 0.5}), {
        f"your step ignores changes of group['lr']: {read}": lambda: _run(groups(torch.optim.AdamW), shapes, grads),
        f"you use the default lr (self.defaults): {read}": lambda: _run(groups(
            lambda g: torch.optim.AdamW([{**x, "lr": 1e-3} for x in g])), shapes, grads),
        "every group has its own weight_decay: read it from the group, not from self.defaults": lambda: _run(
            groups(lambda g: torch.optim.AdamW([{**x, "weight_decay": 1e-2} for x in g])), shapes, grads, {2: 0.5}),
    }, "differs from torch.optim.AdamW with two param groups")


@CHECKS.add("AdamW", "tiny (1e-6) and huge (1e4) gradients; 0-d and 1-element parameters")
def adamw_magnitudes(ws: Workspace) -> None:
    shapes = [(), (1,), (3, 2)]
    for scale in (1e-6, 1e4):
        grads = _grads(shapes, 3, scale)
        knob = {"shapes": shapes, "grads": grads, "lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "wd": 0.0}
        out = _check_finite(_run(_adamw(ws, lr=1e-2, weight_decay=0.0), shapes, grads))
        diagnose(out, _run(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0), shapes, grads), {
            "eps belongs outside the square root, sqrt(v_hat) + eps: inside it, tiny gradients get tiny steps":
                _by_hand(**knob, eps_at="inside"),
            "eps is added before the bias correction of v: add it to sqrt(v_hat), as torch does":
                _by_hand(**knob, eps_at="before"),
        }, f"wrong for gradients of about {scale:g}")


# ---- lr_at -----------------------------------------------------------------------------------------------

def _schedule(fn, steps, *args) -> torch.Tensor:
    values = []
    for s in steps:
        out = call(fn, s, *args)
        if out is None:
            raise CheckFailed("lr_at returned None: did you forget `return`?")
        values.append(float(out))
    return torch.tensor(values, dtype=torch.float64)


def _cosine(steps, lr, ratio, progress, cap=True, period=1.0):
    """The cosine part with one knob per typical mistake: `progress(step)` and what is done with it."""
    out = []
    for s in steps:
        p = min(1.0, progress(s)) if cap else progress(s)
        out.append(lr * (ratio + (1 - ratio) * 0.5 * (1 + math.cos(period * math.pi * p))))
    return torch.tensor(out, dtype=torch.float64)


@CHECKS.add("lr_at", "linear warmup: lr * (step + 1) / warmup_steps for the first warmup_steps steps")
def schedule_warmup(ws: Workspace) -> None:
    steps, args = range(10), (100, 3e-3, 10)
    diagnose(_schedule(ws.get("lr_at"), steps, *args), _schedule(lr_at, steps, *args), {
        "your warmup starts at 0: step 0 already trains, at lr * 1 / warmup_steps (count step + 1)":
            torch.tensor([3e-3 * s / 10 for s in steps], dtype=torch.float64),
        "your warmup reaches lr one step late: lr * (step + 1) / warmup_steps, not / (warmup_steps + 1)":
            torch.tensor([3e-3 * (s + 1) / 11 for s in steps], dtype=torch.float64),
    }, "differs from lr * (step + 1) / warmup_steps", rtol=1e-6, atol=1e-12)


@CHECKS.add("lr_at", "cosine down to lr * min_lr_ratio at max_steps, flat after; no warmup, warmup only")
def schedule_cosine(ws: Workspace) -> None:
    steps, args = range(10, 131, 3), (100, 3e-3, 10, 0.1)

    def progress(s):
        return (s - 10) / 90

    diagnose(_schedule(ws.get("lr_at"), steps, *args), _schedule(lr_at, steps, *args), {
        "your cosine ends at 0: it ends at lr * min_lr_ratio": _cosine(steps, 3e-3, 0.0, progress),
        "your cosine decays over max_steps: it starts after warmup, so progress = (step - warmup_steps) / "
        "(max_steps - warmup_steps)": (_cosine(steps, 3e-3, 0.1, lambda s: s / 100),
                                       _cosine(steps, 3e-3, 0.1, lambda s: (s - 10) / 100)),
        "after max_steps the lr rises again: cap progress at 1": _cosine(steps, 3e-3, 0.1, progress, cap=False),
        "your cosine makes a full period: half of one, cos(pi * progress), goes from lr down to the minimum":
            _cosine(steps, 3e-3, 0.1, progress, period=2.0),
    }, "differs from the cosine decay after warmup", rtol=1e-6, atol=1e-12)
    for args in ((50, 1.0, 0, 0.1), (10, 0.5, 10, 0.0), (20, 2e-4, 3, 1.0)):
        steps = range(args[0] + (5 if args[2] < args[0] else 0))  # warmup only: no step after it
        if not close(_schedule(ws.get("lr_at"), steps, *args), _schedule(lr_at, steps, *args), rtol=1e-6,
                     atol=1e-12):
            raise CheckFailed(f"wrong for (max_steps, lr, warmup_steps, min_lr_ratio) = {args}")


# ---- clip_grad_norm --------------------------------------------------------------------------------------

def _with_grads(shapes, scale: float, seed: int = 2) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * scale
    return params


def _clip(ws, shapes, scale, max_norm, as_generator=False):
    params = _with_grads(shapes, scale)
    norm = call(ws.get("clip_grad_norm"), (p for p in params) if as_generator else params, max_norm)
    if norm is None:
        raise CheckFailed("clip_grad_norm returned None: return the norm before clipping")
    return float(norm), torch.cat([p.grad.flatten() for p in params])


def _clip_reference(shapes, scale, max_norm):
    params = _with_grads(shapes, scale)
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(norm), torch.cat([p.grad.flatten() for p in params])


@CHECKS.add("clip_grad_norm", "one norm over all gradients; above max_norm each is scaled by max_norm / norm")
def clip_global(ws: Workspace) -> None:
    shapes, max_norm = [(3, 4), (5,), (2, 2, 2)], 1.0
    norm, grads = _clip(ws, shapes, 1.0, max_norm)
    ref_norm, ref = _clip_reference(shapes, 1.0, max_norm)
    raw = [p.grad for p in _with_grads(shapes, 1.0)]
    total_sq = sum(float(g.pow(2).sum()) for g in raw)
    diagnose(grads, ref, {
        "each gradient is clipped on its own: compute one norm over all of them together": torch.cat(
            [(g * min(1.0, max_norm / float(g.norm()))).flatten() for g in raw]),
        "you clip each entry to [-max_norm, max_norm] (clipping by value): scale all of them by "
        "max_norm / norm": torch.cat([g.clamp(-max_norm, max_norm).flatten() for g in raw]),
        "the norm has no square root: sqrt(sum of squares)": torch.cat([(g * max_norm / total_sq).flatten()
                                                                       for g in raw]),
        "scaled by norm / max_norm: it is max_norm / norm": torch.cat([(g * ref_norm / max_norm).flatten()
                                                                      for g in raw]),
    }, "the clipped gradients differ from torch.nn.utils.clip_grad_norm_'s")
    if math.isclose(norm, max_norm, rel_tol=1e-4):
        raise CheckFailed(f"returned {norm:.4g}, the norm after clipping: return the norm before it ({ref_norm:.4g})")
    if not math.isclose(norm, ref_norm, rel_tol=1e-4):
        raise CheckFailed(f"returned {norm:.4g}; the global norm before clipping is {ref_norm:.4g}")


@CHECKS.add("clip_grad_norm", "below max_norm nothing changes; no gradient, a generator, tiny and huge ones")
def clip_edges(ws: Workspace) -> None:
    shapes = [(6,), (2, 3)]
    norm, grads = _clip(ws, shapes, 1.0, 100.0)
    ref_norm, ref = _clip_reference(shapes, 1.0, 100.0)
    diagnose(grads, ref, {"you always scale the gradients to max_norm: only clip when the norm is above it":
                          ref * 100.0 / ref_norm}, "below max_norm the gradients must stay as they are")
    params = _with_grads(shapes, 1.0) + [torch.nn.Parameter(torch.zeros(3))]
    try:
        call(ws.get("clip_grad_norm"), params, 0.5)
    except (AttributeError, TypeError) as e:
        raise CheckFailed(f"a parameter without a gradient (p.grad is None) made it fail ({type(e).__name__}): "
                          "skip it") from None
    norm, grads = _clip(ws, shapes, 1.0, 0.5, as_generator=True)
    if not close(grads, _clip_reference(shapes, 1.0, 0.5)[1]):
        raise CheckFailed("given model.parameters() (a generator, used up after one pass) it did not clip: "
                          "make a list of the parameters first")
    for scale in (1e-8, 1e8):
        shapes = [(), (4, 4)]
        norm, grads = _clip(ws, shapes, scale, 1.0)
        ref_norm, ref = _clip_reference(shapes, scale, 1.0)
        if not (close(grads, ref, atol=1e-12) and math.isclose(norm, ref_norm, rel_tol=1e-4)):
            raise CheckFailed(f"wrong for gradients of about {scale:g} (norm {ref_norm:.3g})")


# ---- train_step and train --------------------------------------------------------------------------------

def _model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(get_preset("gpt2-tiny", vocab_size=32, seq_len=16, n_layer=1, n_embd=16, n_head=2))


def _batches(n: int, seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 32, (2, 9), generator=g) for _ in range(n)]


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _reference(model, optimizer, batches, steps=1, lr=None, warmup=0, grad_accum=None, grad_clip=0.0,
               autocast_dtype=None) -> list[float]:
    """llmlab's train_loop on `model`, in place, with the next-token loss of the batches in turn; a constant
    lr unless `lr` is given (then warmup and cosine, as `train`)."""
    it = iter(batches)
    settings = LoopSettings(max_steps=steps, lr=optimizer.param_groups[0]["lr"] if lr is None else lr,
                            warmup_steps=warmup, min_lr_ratio=1.0 if lr is None else 0.1,
                            grad_accum=grad_accum or len(batches), grad_clip=grad_clip, progress=False)
    state = train_loop(model, optimizer, lambda: next(it), settings, TrainState(), autocast_dtype=autocast_dtype,
                       loss_fn=lambda m, tokens: causal_lm_loss(m(tokens)[:, :-1], tokens[:, 1:]))
    return [row["loss"] for row in state.history]


def _by_hand_steps(batches, n_micro, lr, divide=True, clear="step", clip=0.0, clip_each=False):
    """Plain SGD steps of `n_micro` micro-batches each from a fresh `_model()`, written out with one knob per
    typical mistake (the defaults are right): whether each loss is divided by the number of micro-batches,
    when the gradients are cleared ("step", "micro", "never"), where the gradients are clipped."""
    model = _model()
    for i, tokens in enumerate(batches):
        if clear == "micro":
            model.zero_grad()
        loss = causal_lm_loss(model(tokens)[:, :-1], tokens[:, 1:])
        (loss / n_micro if divide else loss).backward()
        last = i % n_micro == n_micro - 1
        if clip and (clip_each or last):
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if last:
            with torch.no_grad():
                for p in model.parameters():
                    p -= lr * p.grad
            if clear != "never":
                model.zero_grad()
    return _weights(model)


def _learner_step(ws, model, optimizer, batches, **kwargs) -> float:
    calls = []
    step = optimizer.step
    optimizer.step = lambda *a, **k: (calls.append(1), step(*a, **k))[1]
    out = call(ws.get("train_step"), model, optimizer, batches, **kwargs)
    if len(calls) != 1:
        raise CheckFailed(f"optimizer.step() ran {len(calls)} times for {len(batches)} micro-batches: step once, "
                          "after the last backward")
    if out is None:
        raise CheckFailed("train_step returned None: return the mean of the micro-batches' losses")
    return float(out)


def _step_pair(ws, n_micro=3, steps=1, grad_clip=0.0, lr=0.5):
    """The learner's and llmlab's weights after `steps` train_steps of plain SGD, their losses, the batches."""
    ours, theirs = _model(), _model()
    batches = _batches(n_micro * steps)
    opt = torch.optim.SGD(ours.parameters(), lr=lr)
    losses = [_learner_step(ws, ours, opt, batches[i * n_micro:(i + 1) * n_micro], grad_clip=grad_clip)
              for i in range(steps)]
    ref = _reference(theirs, torch.optim.SGD(theirs.parameters(), lr=lr), batches, steps, grad_accum=n_micro,
                     grad_clip=grad_clip)
    return _weights(ours), _weights(theirs), losses, ref, batches


@CHECKS.add("train_step", "3 micro-batches: the gradient of their mean, one step, their mean loss, then zero grads")
def step_accumulates(ws: Workspace) -> None:
    ours, theirs, losses, ref, batches = _step_pair(ws, steps=2)
    if close(ours, _weights(_model())):
        raise CheckFailed("the weights did not move: backward each micro-batch's loss, then optimizer.step(); "
                          "and with grad_clip=0 nothing is clipped (0 turns clipping off)")
    diagnose(ours, theirs, {
        "the gradients add up the micro-batches' without dividing: divide each loss by the number of "
        "micro-batches (a mean, not a sum)": lambda: _by_hand_steps(batches, 3, 0.5, divide=False),
        "only the last micro-batch's gradient reached the step: zero the gradients once per step, not per "
        "micro-batch": lambda: _by_hand_steps(batches, 3, 0.5, clear="micro"),
        "the second step reused the first step's gradients: call optimizer.zero_grad() every step":
            lambda: _by_hand_steps(batches, 3, 0.5, clear="never"),
    }, "the weights after two steps differ from llmlab's train_loop's", atol=1e-6)
    with torch.no_grad():
        first = [float(causal_lm_loss(_model()(t)[:, :-1], t[:, 1:])) for t in batches[:3]]
    diagnose(torch.tensor(losses[:1]), torch.tensor(ref[:1]), {
        "you return the sum of the micro-batches' losses: return their mean": torch.tensor([sum(first)]),
        "you return the last micro-batch's loss: return the mean of all of them": (
            torch.tensor(first[-1:]), torch.tensor([first[-1] / 3])),
    }, "the returned loss is not the mean of the micro-batches' losses")


@CHECKS.add("train_step", "grad_clip: the global norm is clipped once, after the last backward, before the step")
def step_clips(ws: Workspace) -> None:
    ours, theirs, _, _, batches = _step_pair(ws, grad_clip=0.05)
    diagnose(ours, theirs, {
        "the step was not clipped: with grad_clip > 0, call clip_grad_norm on the parameters after the "
        "backward passes and before optimizer.step()": lambda: _by_hand_steps(batches, 3, 0.5),
        "you clip inside the micro-batch loop: clip once, after the last backward":
            lambda: _by_hand_steps(batches, 3, 0.5, clip=0.05, clip_each=True),
    }, "the clipped step differs from llmlab's train_loop's", atol=1e-6)


class _Probe:
    """Records, for every forward of `model`, whether autocast was on and with which dtype."""

    def __init__(self, model):
        self.seen = []
        model.register_forward_pre_hook(lambda m, args: self.seen.append(
            torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))


@CHECKS.add("train_step", "autocast_dtype=torch.bfloat16: forward and loss under autocast; weights stay float32")
def step_autocast(ws: Workspace) -> None:
    model, batches = _model(), _batches(2)
    probe = _Probe(model)
    loss = _learner_step(ws, model, torch.optim.SGD(model.parameters(), lr=0.5), batches,
                         autocast_dtype=torch.bfloat16)
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise CheckFailed("your weights became bfloat16: autocast keeps float32 weights and runs each matmul in "
                          "bf16; do not convert the model (.to(torch.bfloat16))")
    if probe.seen != [torch.bfloat16, torch.bfloat16]:
        raise CheckFailed(f"the model ran with autocast {probe.seen} for 2 micro-batches: run model(tokens) and "
                          "the loss inside torch.autocast(device_type, dtype=autocast_dtype)")
    ref_model = _model()
    ref = _reference(ref_model, torch.optim.SGD(ref_model.parameters(), lr=0.5), batches,
                     autocast_dtype=torch.bfloat16)
    if not (math.isclose(loss, ref[0], rel_tol=1e-2) and close(_weights(model), _weights(ref_model), atol=1e-2)):
        raise CheckFailed("the bf16 step is far from llmlab's (beyond bf16 rounding)")
    model = _model()
    probe = _Probe(model)
    _learner_step(ws, model, torch.optim.SGD(model.parameters(), lr=0.5), batches)
    if probe.seen != [None, None]:
        raise CheckFailed("autocast is on with autocast_dtype=None: only use it when a dtype is given")


class _Recording(torch.optim.SGD):
    """SGD that records every group's lr at each step."""

    def __init__(self, params):
        super().__init__(params, lr=123.0)
        self.lrs = []

    def step(self, closure=None):
        self.lrs.append([g["lr"] for g in self.param_groups])
        return super().step(closure)


@CHECKS.add("train", "before every step, each group's lr is lr_at(step, steps, lr, warmup_steps)")
def train_schedule(ws: Workspace) -> None:
    model = _model()
    params = list(model.parameters())
    opt = _Recording([{"params": params[:2]}, {"params": params[2:]}])
    batches = iter(_batches(6))
    call(ws.get("train"), model, opt, lambda: next(batches), 6, 0.1, warmup_steps=2, grad_clip=0.0)
    expected = [lr_at(s, 6, 0.1, 2) for s in range(6)]
    if len(opt.lrs) != 6:
        raise CheckFailed(f"{len(opt.lrs)} optimizer steps for steps=6")
    first = torch.tensor([lrs[0] for lrs in opt.lrs], dtype=torch.float64)
    diagnose(first, torch.tensor(expected, dtype=torch.float64), {
        "the lr never changes: before each step set group['lr'] = lr_at(step, steps, lr, warmup_steps)":
            torch.full((6,), 123.0, dtype=torch.float64),
        "your schedule is one step ahead: the first step uses lr_at(0, ...)":
            torch.tensor([lr_at(s + 1, 6, 0.1, 2) for s in range(6)], dtype=torch.float64),
    }, "the lrs differ from lr_at's schedule (do lr_at's checks pass?)", rtol=1e-6, atol=1e-12)
    if any(not math.isclose(lrs[1], lrs[0]) for lrs in opt.lrs):
        raise CheckFailed("only the first param group follows the schedule: set the lr of every group")


@CHECKS.add("train", "grad_accum micro-batches a step; the losses and weights of llmlab's train_loop")
def train_like_llmlab(ws: Workspace) -> None:
    ours, theirs, batches, calls = _model(), _model(), _batches(8), []

    def next_batch():
        calls.append(1)
        return batches[len(calls) - 1]

    ours.eval()
    opt = torch.optim.SGD(ours.parameters(), momentum=0.9)  # not Adam: its steps hide rounding-sized mistakes
    losses = call(ws.get("train"), ours, opt, next_batch, 4, 0.5, warmup_steps=1, grad_accum=2, grad_clip=0.5)
    if len(calls) != 8:
        raise CheckFailed(f"next_batch ran {len(calls)} times for 4 steps of grad_accum=2: call it once per "
                          "micro-batch, grad_accum times a step")
    if not isinstance(losses, list | tuple) or len(losses) != 4:
        raise CheckFailed("train should return a list of one loss per step")
    if not ours.training:
        raise CheckFailed("the model is still in eval mode: call model.train() first")
    ref = _reference(theirs, torch.optim.SGD(theirs.parameters(), momentum=0.9), batches, 4, 0.5, 1, 2, 0.5)
    unclipped = _model()
    diagnose(torch.tensor([float(x) for x in losses]), torch.tensor(ref), {
        "grad_clip is not passed on to train_step": lambda: torch.tensor(_reference(
            unclipped, torch.optim.SGD(unclipped.parameters(), momentum=0.9), batches, 4, 0.5, 1, 2, 1.0)),
    }, "the losses differ from llmlab's train_loop's with the same batches")
    if not close(_weights(ours), _weights(theirs), atol=1e-6):
        raise CheckFailed("the weights after 4 steps differ from llmlab's train_loop's")
    model = _model()
    probe = _Probe(model)
    call(ws.get("train"), model, torch.optim.SGD(model.parameters(), lr=0.1), iter(batches).__next__, 1, 0.1,
         autocast_dtype=torch.bfloat16)
    if probe.seen != [torch.bfloat16]:
        raise CheckFailed("train does not pass autocast_dtype on to train_step")
