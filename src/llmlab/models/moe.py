"""A mixture-of-experts MLP: a router sends each token to k of n_expert small MLPs and mixes their outputs.

What it does, in order (each step a small function below, so a test can check it alone):
1. route: router logits (N, E) -> the k experts of each token and their weights, with the softmax after
   the top-k (Mixtral: softmax over the k best logits) or before it (Qwen-MoE, OLMoE: softmax over all E,
   keep the k best, optionally renormalised to sum to 1 - `norm_topk_prob`);
2. capacity (optional): each expert takes at most ceil(capacity_factor * N * k / E) assignments; first
   choices are served before second ones (GShard), earlier tokens before later ones. A dropped assignment
   adds nothing, the token passes on through the residual. None means no limit, as HF runs inference;
3. experts: a readable path (a loop over experts, each on the tokens routed to it) and a batched one
   (tokens sorted by expert into a padded (E, max_load, C) buffer, every expert run at once with `vmap`
   over the stacked weights). Tests hold them equal;
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
from llmlab.models.layers import MLPS


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
        self.impl = "batched"  # or "loop"; both give the same numbers
        self.aux: dict[str, torch.Tensor] = {}
        self.load: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        flat = x.reshape(B * T, C)  # (N, C)
        logits = self.router(flat)  # (N, E)
        weights, experts = route(logits, self.k, self.softmax, self.norm_topk_prob)  # (N, k) each
        keep = within_capacity(experts, self.n_expert, capacity(B * T, self.k, self.n_expert, self.capacity_factor))
        weights = weights.to(x.dtype)
        fast = self.impl == "batched" and self._stackable()
        out = self._batched(flat, weights, experts, keep) if fast else self._loop(flat, weights, experts, keep)
        if self.shared_expert is not None:
            out = out + torch.sigmoid(self.shared_gate(flat)) * self.shared_expert(flat)
        self.aux = {"balance": load_balancing_loss(logits, experts, self.n_expert), "z": router_z_loss(logits)}
        self.load = {"tokens": torch.bincount(experts[keep], minlength=self.n_expert).detach(),
                     "dropped": (~keep).sum().detach()}
        return out.view(B, T, C)

    def _loop(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor,
              keep: torch.Tensor) -> torch.Tensor:
        """Readable path: each expert runs on its tokens; outputs are weighted and added back in place."""
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where((experts == e) & keep)  # which tokens chose e, and as which choice
            if token.numel():
                out.index_add_(0, token, expert(x[token]) * weights[token, slot, None])
        return out

    def _stackable(self) -> bool:
        """The batched path stacks plain Linear weights; a quantised or LoRA-wrapped expert takes the loop."""
        return all(type(m) is nn.Linear for expert in self.experts for m in expert.children())

    def _batched(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor,
                 keep: torch.Tensor) -> torch.Tensor:
        """Fast path: sort assignments by expert, pad each expert's tokens to the busiest one's count,
        run all experts in one batched call (vmap over the stacked weights), scatter back with index_add."""
        N, C = x.shape
        token = torch.arange(N, device=x.device)[:, None].expand_as(experts)[keep]  # (M,) kept assignments
        expert, weight = experts[keep], weights[keep]  # (M,)
        order = torch.argsort(expert, stable=True)
        token, expert, weight = token[order], expert[order], weight[order]
        counts = torch.bincount(expert, minlength=self.n_expert)  # (E,)
        starts = torch.cumsum(counts, 0) - counts  # (E,) first sorted assignment of each expert
        slot = torch.arange(expert.numel(), device=x.device) - starts[expert]  # (M,) row in its expert's block
        width = int(counts.max()) if expert.numel() else 0
        buffer = x.new_zeros(self.n_expert, width, C)
        buffer[expert, slot] = x[token]  # (E, width, C)
        params = {name: torch.stack([dict(e.named_parameters())[name] for e in self.experts])
                  for name, _ in self.experts[0].named_parameters()}  # each (E, ...)
        run = torch.func.vmap(lambda p, h: torch.func.functional_call(self.experts[0], p, (h,)))
        y = run(params, buffer)  # (E, width, C)
        return torch.zeros_like(x).index_add_(0, token, y[expert, slot] * weight[:, None])
