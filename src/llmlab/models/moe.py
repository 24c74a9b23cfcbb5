"""A mixture-of-experts MLP: a router sends each token to k of n_expert small MLPs and mixes their outputs.

What it does, in order (each step a small function below, so a test can check it alone):
1. route: router logits (N, E) -> the k experts of each token and their weights, with the softmax after
   the top-k (Mixtral: softmax over the k best logits) or before it (Qwen-MoE, OLMoE: softmax over all E,
   keep the k best, optionally renormalised to sum to 1 - `norm_topk_prob`);
2. capacity (optional): each expert takes at most ceil(capacity_factor * N * k / E) assignments; first
   choices are served before second ones (GShard), earlier tokens before later ones. A dropped assignment
   adds nothing, the token passes on through the residual. None means no limit, as HF runs inference;
3. experts, three ways that tests hold equal (`impl`):
   - "loop", the readable one: each expert finds its tokens, runs on them and adds its weighted output back;
   - "sorted": the assignments sorted by expert once, so each expert's tokens are one contiguous slice of a
     single gather; one weighted scatter (index_add) at the end. Any expert module works (LoRA, quantised);
   - "batched": the sorted tokens padded into an (E, max_load, C) buffer and every expert's matrix applied
     at once with one `bmm` per projection over the stacked weights: a constant number of kernels however
     many experts (what a GPU wants), paid for with the padding's wasted rows;
   - "auto" (the default): "batched" on CUDA, "sorted" elsewhere (benchmarks/moe_paths.py measures all three);
4. an optional shared expert every token goes through, scaled by a sigmoid gate (Qwen2-MoE).

After each forward the module keeps `aux` (the load-balancing loss and router z-loss, for training) and
`load` (tokens per expert, dropped assignments) for statistics; `Transformer.aux_loss()` sums them.
Load balancing, Switch form (Fedus et al. 2022) as transformers computes it for Mixtral: E * sum_e f_e P_e,
f_e the fraction of tokens that chose expert e among their k, P_e the mean router probability of e (=k when
perfectly balanced). Router z-loss (Zoph et al. 2022, ST-MoE): mean over tokens of logsumexp(logits)^2.
Not here: expert parallelism across devices, token-choice alternatives (expert choice), jitter noise.
"""

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.models.config import ModelConfig
from llmlab.models.layers import MLPS, GeluMLP, SwiGLUMLP


def route(logits: torch.Tensor, k: int, softmax: str = "after",
          norm_topk_prob: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits (N, E) -> (weights (N, k), experts (N, k)), computed in float32.

    Example: logits [2, 0, 1], k=2, "after" -> experts [0, 2], weights softmax([2, 1]) = [0.73, 0.27];
    "before" without renormalising -> weights softmax([2, 0, 1])[[0, 2]] = [0.67, 0.24].
    """
    logits = logits.float()
    if softmax == "after":
        top, experts = logits.topk(k, dim=-1)
        return top.softmax(dim=-1), experts
    weights, experts = logits.softmax(dim=-1).topk(k, dim=-1)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts


def capacity(n_tokens: int, k: int, n_expert: int, factor: float | None) -> int | None:
    """How many assignments one expert may take: ceil(factor * N * k / E); None for no limit."""
    return None if factor is None else max(1, math.ceil(factor * n_tokens * k / n_expert))


def within_capacity(experts: torch.Tensor, n_expert: int, cap: int | None) -> torch.Tensor:
    """keep (N, k) bool: whether each assignment fits its expert's capacity.

    Queue order: all first choices (token 0, 1, ...), then all second choices, ... Example: experts
    [[0, 1], [0, 1], [0, 2]], cap 2 -> token 2's first choice is expert 0's third: [[T, T], [T, T], [F, T]].
    """
    if cap is None:
        return torch.ones_like(experts, dtype=torch.bool)
    N, k = experts.shape
    flat = experts.t().reshape(-1)  # (k*N,) choice-major: every first choice, then every second, ...
    onehot = F.one_hot(flat, n_expert)  # (k*N, E)
    rank = (onehot.cumsum(0) - 1).gather(1, flat[:, None])[:, 0]  # (k*N,) place in its expert's queue
    return (rank < cap).view(k, N).t()  # (N, k)


def load_balancing_loss(logits: torch.Tensor, experts: torch.Tensor, n_expert: int) -> torch.Tensor:
    """E * sum_e f_e * P_e (see the module docstring): k when the router spreads tokens evenly."""
    chose = F.one_hot(experts, n_expert).float().sum(1)  # (N, E): 1 where the token picked e among its k
    f = chose.mean(0)  # (E,)
    p = logits.float().softmax(dim=-1).mean(0)  # (E,)
    return n_expert * (f * p).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """mean(logsumexp(logits)^2): keeps router logits small, so the router's softmax stays stable."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


class MoE(nn.Module):
    """router (E, C) + n_expert MLPs of width expert_size (+ an optional shared expert): (B, T, C) -> (B, T, C)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_expert, self.k = config.n_expert, config.expert_top_k
        self.softmax, self.norm_topk_prob = config.router_softmax, config.norm_topk_prob
        self.capacity_factor = config.capacity_factor
        self.router = nn.Linear(config.n_embd, config.n_expert, bias=False)
        expert = dataclasses.replace(config, intermediate_size=config.expert_size or config.intermediate_size)
        self.experts = nn.ModuleList(MLPS[config.mlp](expert) for _ in range(config.n_expert))
        self.shared_expert, self.shared_gate = None, None
        if config.shared_expert_size:
            shared = dataclasses.replace(config, intermediate_size=config.shared_expert_size)
            self.shared_expert = MLPS[config.mlp](shared)
            self.shared_gate = nn.Linear(config.n_embd, 1, bias=False)
        self.impl = "auto"  # or "loop", "sorted", "batched"; all give the same numbers
        self.aux: dict[str, torch.Tensor] = {}
        self.load: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        flat = x.reshape(B * T, C)  # (N, C)
        logits = self.router(flat)  # (N, E)
        weights, experts = route(logits, self.k, self.softmax, self.norm_topk_prob)  # (N, k) each
        keep = within_capacity(experts, self.n_expert, capacity(B * T, self.k, self.n_expert, self.capacity_factor))
        weights = weights.to(x.dtype)
        out = IMPLS[self._impl_for(x)](self, flat, weights, experts, keep)
        if self.shared_expert is not None:
            out = out + torch.sigmoid(self.shared_gate(flat)) * self.shared_expert(flat)
        self.aux = {"balance": load_balancing_loss(logits, experts, self.n_expert), "z": router_z_loss(logits)}
        self.load = {"tokens": torch.bincount(experts[keep], minlength=self.n_expert).detach(),
                     "dropped": (~keep).sum().detach()}
        return out.view(B, T, C)

    def _impl_for(self, x: torch.Tensor) -> str:
        if self.impl not in (*IMPLS, "auto"):
            raise ValueError(f"MoE impl {self.impl!r} is unknown; choose auto, {', '.join(IMPLS)}")
        stackable = self._stackable()
        if self.impl == "auto":
            return "batched" if x.is_cuda and stackable else "sorted"
        return "sorted" if self.impl == "batched" and not stackable else self.impl

    def _stackable(self) -> bool:
        """The batched path stacks plain Linear weights; a quantised or LoRA-wrapped expert takes "sorted"."""
        return type(self.experts[0]) in STACKED_MLPS and all(
            type(m) is nn.Linear for expert in self.experts for m in expert.children())


def _loop(moe: MoE, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor, keep: torch.Tensor
          ) -> torch.Tensor:
    """Readable path: each expert runs on its tokens; outputs are weighted and added back in place."""
    out = torch.zeros_like(x)
    for e, expert in enumerate(moe.experts):
        token, slot = torch.where((experts == e) & keep)  # which tokens chose e, and as which choice
        if token.numel():
            out.index_add_(0, token, expert(x[token]) * weights[token, slot, None])
    return out


def _sort_by_expert(experts: torch.Tensor, weights: torch.Tensor, keep: torch.Tensor, n_expert: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kept assignments in expert order: (token, expert, weight) each (M,), and counts (E,).

    Example: experts [[1, 0], [1, 2]], all kept -> token [0, 0, 1, 1], expert [0, 1, 1, 2], counts [1, 2, 1].
    """
    token = torch.arange(experts.shape[0], device=experts.device)[:, None].expand_as(experts)[keep]  # (M,)
    expert, weight = experts[keep], weights[keep]  # (M,)
    order = torch.argsort(expert, stable=True)  # stable: within an expert, tokens stay in order
    return token[order], expert[order], weight[order], torch.bincount(expert, minlength=n_expert)


def _sorted(moe: MoE, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor, keep: torch.Tensor
            ) -> torch.Tensor:
    """One gather of every assignment's token in expert order; expert e runs on its contiguous slice."""
    token, _, weight, counts = _sort_by_expert(experts, weights, keep, moe.n_expert)
    out = torch.zeros_like(x)
    if not token.numel():  # an empty batch: nothing to concatenate
        return out
    groups = x[token].split(counts.tolist())  # E slices of (n_e, C)
    # idle experts are skipped: decoding one token wakes only k of them
    y = torch.cat([expert(h) for expert, h in zip(moe.experts, groups, strict=True) if len(h)])  # (M, C)
    return out.index_add_(0, token, y * weight[:, None])


def _stacked_linear(moe: MoE, name: str, h: torch.Tensor) -> torch.Tensor:
    """Every expert's Linear `name` at once: h (E, W, in) -> (E, W, out), weights stacked to (E, out, in)."""
    layers = [getattr(expert, name) for expert in moe.experts]
    y = torch.bmm(h, torch.stack([m.weight for m in layers]).transpose(1, 2))  # (E, W, out)
    return y if layers[0].bias is None else y + torch.stack([m.bias for m in layers])[:, None]


def _stacked_gelu(moe: MoE, h: torch.Tensor) -> torch.Tensor:
    return _stacked_linear(moe, "down_proj", F.gelu(_stacked_linear(moe, "up_proj", h), approximate="tanh"))


def _stacked_swiglu(moe: MoE, h: torch.Tensor) -> torch.Tensor:
    gate, up = _stacked_linear(moe, "gate_proj", h), _stacked_linear(moe, "up_proj", h)
    return _stacked_linear(moe, "down_proj", F.silu(gate) * up)


# each expert MLP's forward (layers.py) over stacked weights; the equality tests hold the pairs together
STACKED_MLPS = {GeluMLP: _stacked_gelu, SwiGLUMLP: _stacked_swiglu}


def _batched(moe: MoE, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor, keep: torch.Tensor
             ) -> torch.Tensor:
    """Padded path: expert e's tokens fill rows e*W .. e*W + n_e - 1 of an (E*W, C) buffer, W the busiest
    expert's count; one bmm per projection runs all experts; the real rows are weighted and scattered back."""
    N, C = x.shape
    token, expert, weight, counts = _sort_by_expert(experts, weights, keep, moe.n_expert)
    width = int(counts.max()) if token.numel() else 0
    starts = torch.cumsum(counts, 0) - counts  # (E,) first sorted assignment of each expert
    row = expert * width + torch.arange(token.numel(), device=x.device) - starts[expert]  # (M,) buffer row
    buffer = x.new_zeros(moe.n_expert * width, C).index_copy(0, row, x[token])
    y = STACKED_MLPS[type(moe.experts[0])](moe, buffer.view(moe.n_expert, width, C))  # (E, W, C)
    return torch.zeros_like(x).index_add_(0, token, y.reshape(-1, C)[row] * weight[:, None])


IMPLS = {"loop": _loop, "sorted": _sorted, "batched": _batched}
