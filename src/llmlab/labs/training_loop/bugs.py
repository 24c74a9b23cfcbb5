"""Lab: training-loop, planted bugs: learner-style correct answers with one typical mistake each, and the words
the checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

LOOP = '''
import math
import torch
import torch.nn.functional as F


def next_token_loss(logits, tokens, ignore_index=-100):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), tokens[:, 1:].reshape(-1),
                           ignore_index=ignore_index)


class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["t"] += 1
                t, g = state["t"], p.grad
                p.mul_(1 - lr * wd)
                state["m"] = b1 * state["m"] + (1 - b1) * g
                state["v"] = b2 * state["v"] + (1 - b2) * g * g
                m_hat = state["m"] / (1 - b1 ** t)
                v_hat = state["v"] / (1 - b2 ** t)
                p -= lr * m_hat / (v_hat.sqrt() + eps)


def lr_at(step, max_steps, lr, warmup_steps, min_lr_ratio=0.1):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * (1 + math.cos(math.pi * progress)) / 2)


def clip_grad_norm(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    if norm > max_norm:
        for g in grads:
            g *= max_norm / norm
    return norm


def train_step(model, optimizer, micro_batches, grad_clip=1.0, autocast_dtype=None):
    device_type = next(model.parameters()).device.type
    total = 0.0
    for tokens in micro_batches:
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = next_token_loss(model(tokens), tokens) / len(micro_batches)
        loss.backward()
        total += loss.item()
    if grad_clip > 0:
        clip_grad_norm([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return total


def train(model, optimizer, next_batch, steps, lr, warmup_steps=0, grad_accum=1, grad_clip=1.0,
          autocast_dtype=None):
    model.train()
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup_steps)
        batches = [next_batch() for _ in range(grad_accum)]
        losses.append(train_step(model, optimizer, batches, grad_clip, autocast_dtype))
    return losses
'''


def _bug(name: str, item: str, old: str, new: str, expect: str) -> Bug:
    return Bug(name, item, planted(LOOP, old, new), expect)


BUGS = [
    _bug("no-shift", "next_token_loss", "logits[:, :-1].reshape(-1, V).float(), tokens[:, 1:]",
         "logits.reshape(-1, V).float(), tokens", "no shift"),
    _bug("shift-backwards", "next_token_loss", "logits[:, :-1].reshape(-1, V).float(), tokens[:, 1:]",
         "logits[:, 1:].reshape(-1, V).float(), tokens[:, :-1]", "shifted the wrong way"),
    _bug("ignore-index-dropped", "next_token_loss", ",\n                           ignore_index=ignore_index)", ")",
         "pass ignore_index on"),
    _bug("loss-in-bf16", "next_token_loss", ".reshape(-1, V).float()", ".reshape(-1, V)", "upcast the logits"),
    _bug("summed-loss", "next_token_loss", "ignore_index=ignore_index)", "ignore_index=ignore_index, "
         "reduction='sum')", "you return the sum"),
    _bug("l2-decay", "AdamW", "                p.mul_(1 - lr * wd)\n", "                g = g + wd * p\n", "Adam's L2"),
    _bug("decay-without-lr", "AdamW", "p.mul_(1 - lr * wd)", "p.mul_(1 - wd)", "not multiplied by lr"),
    _bug("no-bias-correction", "AdamW", "m_hat = state[\"m\"] / (1 - b1 ** t)", "m_hat = state[\"m\"]",
         "no bias correction"),
    _bug("t-from-zero", "AdamW", "                state[\"t\"] += 1\n                t, g = state[\"t\"], p.grad\n",
         "                t, g = state[\"t\"], p.grad\n                state[\"t\"] += 1\n", "counted from 1"),
    _bug("eps-inside-sqrt", "AdamW", "(v_hat.sqrt() + eps)", "(v_hat + eps).sqrt()", "outside the square root"),
    _bug("lr-frozen", "AdamW", "            lr, (b1, b2), eps, wd = group[\"lr\"], group[\"betas\"]",
         "            lr, (b1, b2), eps, wd = self.defaults[\"lr\"], group[\"betas\"]", "read the lr from each group"),
    _bug("updates-params-without-grad", "AdamW", "                if p.grad is None:\n                    continue\n",
         "                if p.grad is None:\n                    p.grad = torch.zeros_like(p)\n",
         "a parameter without a gradient changed"),
    _bug("warmup-from-zero", "lr_at", "lr * (step + 1) / warmup_steps", "lr * step / warmup_steps",
         "your warmup starts at 0"),
    _bug("decays-to-zero", "lr_at", "lr * (min_lr_ratio + (1 - min_lr_ratio) * (1 + math.cos",
         "lr * ((1 + math.cos", "ends at 0"),
    _bug("progress-over-max-steps", "lr_at", "(step - warmup_steps) / max(1, max_steps - warmup_steps)",
         "step / max_steps", "decays over max_steps"),
    _bug("progress-not-capped", "lr_at", "min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))",
         "(step - warmup_steps) / max(1, max_steps - warmup_steps)", "cap progress at 1"),
    _bug("per-tensor-clip", "clip_grad_norm", "    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))\n"
         "    if norm > max_norm:\n        for g in grads:\n            g *= max_norm / norm\n    return norm\n",
         "    for g in grads:\n        if g.norm() > max_norm:\n            g *= max_norm / g.norm()\n"
         "    return torch.sqrt(sum((g ** 2).sum() for g in grads))\n", "clipped on its own"),
    _bug("always-clip", "clip_grad_norm", "    if norm > max_norm:\n        for g in grads:\n            g *= max_norm",
         "    for g in grads:\n        g *= max_norm", "only clip when the norm is above it"),
    _bug("norm-without-sqrt", "clip_grad_norm", "torch.sqrt(sum((g ** 2).sum() for g in grads))",
         "sum((g ** 2).sum() for g in grads)", "no square root"),
    _bug("generator-used-up", "clip_grad_norm", "    grads = [p.grad for p in params if p.grad is not None]\n"
         "    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))\n",
         "    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params if p.grad is not None))\n"
         "    grads = [p.grad for p in params if p.grad is not None]\n", "make a list of the parameters first"),
    _bug("grads-summed", "train_step", "next_token_loss(model(tokens), tokens) / len(micro_batches)",
         "next_token_loss(model(tokens), tokens)", "divide each loss by the number of micro-batches"),
    _bug("zero-grad-per-micro-batch", "train_step", "    for tokens in micro_batches:\n",
         "    for tokens in micro_batches:\n        optimizer.zero_grad()\n", "zero the gradients once per step"),
    _bug("no-zero-grad", "train_step", "    optimizer.step()\n    optimizer.zero_grad()\n", "    optimizer.step()\n",
         "reused the first step's gradients"),
    _bug("step-per-micro-batch", "train_step", "        loss.backward()\n", "        loss.backward()\n"
         "        optimizer.step()\n", "step once"),
    _bug("no-clip", "train_step", "    if grad_clip > 0:\n", "    if False:\n", "the step was not clipped"),
    _bug("clip-each-micro-batch", "train_step", "        loss.backward()\n", "        loss.backward()\n"
         "        if grad_clip > 0:\n            clip_grad_norm(model.parameters(), grad_clip)\n",
         "clip once, after the last backward"),
    _bug("no-autocast", "train_step", "enabled=autocast_dtype is not None", "enabled=False",
         "inside torch.autocast"),
    _bug("model-to-bf16", "train_step", "    total = 0.0\n", "    total = 0.0\n    if autocast_dtype is not None:\n"
         "        model.to(autocast_dtype)\n", "your weights became bfloat16"),
    _bug("returns-last-loss", "train_step", "total += loss.item()", "total = loss.item() * len(micro_batches)",
         "you return the last micro-batch's loss"),
    _bug("no-schedule", "train", "            group[\"lr\"] = lr_at(step, steps, lr, warmup_steps)\n",
         "            pass\n", "the lr never changes"),
    _bug("schedule-ahead", "train", "lr_at(step, steps,", "lr_at(step + 1, steps,", "one step ahead"),
    _bug("first-group-only", "train", "        for group in optimizer.param_groups:\n            group[\"lr\"]",
         "        for group in optimizer.param_groups[:1]:\n            group[\"lr\"]", "every group"),
    _bug("one-batch-per-step", "train", "[next_batch() for _ in range(grad_accum)]", "[next_batch()] * grad_accum",
         "call it once per micro-batch"),
    _bug("no-train-mode", "train", "    model.train()\n", "", "model.train()"),
    _bug("clip-dropped", "train", "train_step(model, optimizer, batches, grad_clip, autocast_dtype)",
         "train_step(model, optimizer, batches, autocast_dtype=autocast_dtype)", "grad_clip is not passed on"),
]

ALTERNATIVES = [  # a hand-written log-softmax with a mask; torch's foreach ops in AdamW; zero_grad first
    planted(LOOP, '''    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), tokens[:, 1:].reshape(-1),
                           ignore_index=ignore_index)
''', '''    logp = logits[:, :-1].double().log_softmax(-1)  # (B, T - 1, V)
    targets = tokens[:, 1:]
    keep = targets != ignore_index
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, T - 1)
    return (-(picked * keep).sum() / keep.sum()).float()
'''),
    planted(planted(LOOP, "    total = 0.0\n", "    optimizer.zero_grad()\n    total = 0.0\n"),
            "    optimizer.step()\n    optimizer.zero_grad()\n", "    optimizer.step()\n"),
    planted(LOOP, "    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))",
            "    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))"),
]
