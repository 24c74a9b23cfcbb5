"""DiLoCo: K workers train apart for H steps, then average how far they moved (Douillard et al. 2023).

Distributed Low-Communication training. Every worker holds the same global weights theta and its own data.
A round: each worker copies theta into its model and takes H inner AdamW steps on its own batches; its
pseudo-gradient is theta - theta_k, how far it moved (the direction a gradient step would point, summed
over H steps). The pseudo-gradients are averaged with one all-reduce, and an outer SGD with Nesterov momentum
(the paper's lr 0.7, momentum 0.9) takes a step on theta with that average as the gradient. Each worker
keeps its own AdamW moments from round to round, as in the paper.

Communication: one all-reduce of the weights every H steps, against data-parallel training's all-reduce of
the gradients every step, so H times fewer bytes; `compress="int8-row"` (or "int8-tensor") sends the
pseudo-gradients as int8 through the hand-written ring (`train/collectives.py`), about 4x fewer again.
With K=1, H=1, outer lr 1 and no momentum, theta - 1 * (theta - theta_1) = theta_1: plain training.

`train_worker` is one rank of the `compare diloco` recipe's runs: DiLoCo, or PyTorch's own
`DistributedDataParallel` (gradients all-reduced every step, bytes counted by a DDP communication hook), at
the same per-worker batch and steps, so both spend the same compute. It is launched by `train.spawn`.
What this file does not do: overlap the outer all-reduce with inner steps (streaming DiLoCo), or resume.
"""

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from llmlab.common.checkpoint import model_tensors
from llmlab.data.loader import WindowSampler, sequential_windows
from llmlab.eval.loss import mean_heldout_loss
from llmlab.models import ModelConfig, Transformer
from llmlab.train.collectives import COMPRESSIONS, FORMULAS, Comm
from llmlab.train.objectives import causal_lm_loss
from llmlab.train.optim import lr_at, make_adamw


class NesterovSGD:
    """The outer optimizer, by hand: v = mu v + g; theta -= lr (g + mu v) (Nesterov) or lr v (heavy ball).

    The same update as `torch.optim.SGD(momentum=mu, nesterov=True)`, whose first step also starts v at g.
    """

    def __init__(self, params: list[torch.Tensor], lr: float = 0.7, momentum: float = 0.9, nesterov: bool = True):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"outer lr must be positive and momentum in [0, 1); got lr={lr}, momentum={momentum}")
        self.params, self.lr, self.momentum, self.nesterov = params, lr, momentum, nesterov
        self.velocity = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        for p, g, v in zip(self.params, grads, self.velocity, strict=True):
            v.mul_(self.momentum).add_(g)
            p.sub_(self.lr * (g + self.momentum * v if self.nesterov else v))


def trainable_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Each parameter that trains once (a tied embedding and head are one tensor)."""
    seen, out = set(), []
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class DiLoCo:
    """One worker's side of DiLoCo: the global weights, the outer optimizer, and `sync()` every H steps."""

    def __init__(self, model: torch.nn.Module, outer_lr: float = 0.7, outer_momentum: float = 0.9,
                 nesterov: bool = True, compress: str = "none", comm: Comm | None = None):
        if compress not in COMPRESSIONS:
            raise ValueError(f"compress must be one of {COMPRESSIONS}, got {compress!r}")
        self.params = trainable_params(model)
        self.global_params = [p.detach().clone() for p in self.params]  # theta, the same on every worker
        self.outer = NesterovSGD(self.global_params, outer_lr, outer_momentum, nesterov)
        self.compress = compress
        # int8 sums would overflow in torch's all-reduce; the hand ring adds them in float32
        self.comm = comm or Comm("ring" if compress != "none" else "torch")

    def pseudo_gradients(self) -> list[torch.Tensor]:
        return [g - p.detach() for g, p in zip(self.global_params, self.params, strict=True)]  # theta - theta_k

    @torch.no_grad()
    def sync(self) -> None:
        """Average the pseudo-gradients over workers, step the global weights, restart the model from them."""
        deltas = self.pseudo_gradients()
        if self.comm.world > 1:
            deltas = [self.comm.all_reduce(d, self.compress) / self.comm.world for d in deltas]
        self.outer.step(deltas)
        for p, g in zip(self.params, self.global_params, strict=True):
            p.copy_(g)

    def bytes_sent(self) -> int:
        return self.comm.bytes_sent()


@dataclass
class RunSpec:
    """One run of the comparison, the same on every rank. mode: "ddp" or "diloco"."""
    model_config: ModelConfig
    data_dir: str
    mode: str
    max_steps: int
    batch_size: int
    lr: float
    inner_steps: int = 1  # H (DiLoCo only)
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    compress: str = "none"
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 50
    eval_tokens: int = 8192
    seed: int = 1337
    progress: bool = False
    label: str = ""


def _counting_allreduce_hook(counter: list[int], bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's default all-reduce of one gradient bucket, its bytes added to counter[0] on the way."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    buffer = bucket.buffer()
    counter[0] += buffer.numel() * buffer.element_size()
    return allreduce_hook(None, bucket)


def train_worker(rank: int, world: int, spec: RunSpec) -> dict:
    """Train one rank of `spec`; rank 0 evaluates the global model and returns its weights too.

    Every rank returns its per-step losses and the bytes it sent (DDP: the ring formula on the gradient
    buckets DDP all-reduced; DiLoCo: what its collectives logged). Rank 0 adds held-out loss at every
    `eval_interval` steps and at the end, and the final global weights (CPU tensors by name).
    """
    if spec.mode not in ("ddp", "diloco"):
        raise ValueError(f"mode must be 'ddp' or 'diloco', got {spec.mode!r}")
    torch.manual_seed(spec.seed)  # the same initial weights on every rank
    model = Transformer(spec.model_config)
    seq_len = spec.model_config.seq_len
    # each worker its own stream of windows: its own part of the data, in expectation
    sampler = WindowSampler(spec.data_dir, "train", spec.batch_size, seq_len, seed=spec.seed + 1 + rank)
    inner = make_adamw(model, spec.lr, spec.weight_decay)
    params = trainable_params(model)
    ddp_bytes, diloco = [0], None
    if spec.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model)
        forward.register_comm_hook(ddp_bytes, _counting_allreduce_hook)
    else:
        forward = model
        diloco = DiLoCo(model, spec.outer_lr, spec.outer_momentum, compress=spec.compress)
        eval_model = Transformer(spec.model_config)  # holds the global weights for evaluation

    def bytes_sent() -> int:
        return round(FORMULAS["all_reduce"](ddp_bytes[0], world)) if diloco is None else diloco.bytes_sent()

    def evaluate() -> float:
        target = model
        if diloco is not None:
            with torch.no_grad():
                for p, g in zip(trainable_params(eval_model), diloco.global_params, strict=True):
                    p.copy_(g)
            target = eval_model
        batches = sequential_windows(spec.data_dir, "val", spec.batch_size, seq_len, spec.eval_tokens)
        return mean_heldout_loss(target, batches)

    history = []
    bar = tqdm(total=spec.max_steps, desc=spec.label or spec.mode, disable=not (spec.progress and rank == 0),
               dynamic_ncols=True, leave=False)
    t0 = time.perf_counter()
    model.train()
    for step in range(spec.max_steps):
        for group in inner.param_groups:
            group["lr"] = lr_at(step, spec.max_steps, spec.lr, spec.warmup_steps, spec.min_lr_ratio)
        idx, targets = sampler.next_batch()  # (B, T) each
        loss = causal_lm_loss(forward(idx), targets)
        loss.backward()  # DDP all-reduces the gradients here, bucket by bucket
        if spec.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
        inner.step()
        inner.zero_grad(set_to_none=True)
        done = step + 1
        if diloco is not None and (done % spec.inner_steps == 0 or done == spec.max_steps):
            diloco.sync()  # a last, shorter round so the final global model has every step in it
        row = {"step": done, "loss": loss.item(), "bytes": bytes_sent()}
        if rank == 0 and (done % spec.eval_interval == 0 or done == spec.max_steps):
            row["val_loss"] = evaluate()
        history.append(row)
        bar.update(1)
        bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss", "val_loss") if k in row})
    bar.close()
    out = {"rank": rank, "history": history, "bytes_sent": bytes_sent(), "seconds": time.perf_counter() - t0}
    if rank == 0:  # after the last sync the model holds the global weights
        out["weights"] = model_tensors(model)
    return out
