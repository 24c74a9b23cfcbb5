"""The mixture-of-experts MLP: routing and losses against transformers' own, the loop and batched paths equal,
capacity against a plain-Python queue, and the aux losses reaching the training objective."""

import math

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.models import ModelConfig, Transformer
from llmlab.models.moe import (
    MoE,
    _sort_by_expert,
    capacity,
    load_balancing_loss,
    route,
    router_z_loss,
    within_capacity,
)
from llmlab.train.moe_loss import moe_lm_loss, with_aux_loss
from llmlab.train.objectives import lm_loss

transformers = pytest.importorskip("transformers")


def _config(**kw) -> ModelConfig:
    base = dict(vocab_size=101, seq_len=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, pos="rope", norm="rmsnorm",
                mlp="swiglu", bias=False, n_expert=4, expert_top_k=2, expert_size=24)
    return ModelConfig(**{**base, **kw})


def test_route_after_topk_matches_mixtral_router():
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    hf_config = transformers.MixtralConfig(hidden_size=16, num_local_experts=6, num_experts_per_tok=2)
    router = MixtralTopKRouter(hf_config)
    torch.nn.init.normal_(router.weight)
    x = torch.randn(50, 16)
    _, hf_weights, hf_experts = router(x)
    weights, experts = route(x @ router.weight.t(), 2, softmax="after")
    assert torch.equal(experts, hf_experts)
    torch.testing.assert_close(weights, hf_weights.float())


@pytest.mark.parametrize("norm_topk_prob", [False, True])
def test_route_before_topk_matches_qwen_router(norm_topk_prob):
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeTopKRouter

    hf_config = transformers.Qwen2MoeConfig(hidden_size=16, num_experts=6, num_experts_per_tok=3,
                                            norm_topk_prob=norm_topk_prob)
    router = Qwen2MoeTopKRouter(hf_config)
    torch.nn.init.normal_(router.weight)
    x = torch.randn(50, 16)
    _, hf_weights, hf_experts = router(x)
    weights, experts = route(x @ router.weight.t(), 3, softmax="before", norm_topk_prob=norm_topk_prob)
    assert torch.equal(experts, hf_experts)
    torch.testing.assert_close(weights, hf_weights.float())


def test_route_worked_example():
    weights, experts = route(torch.tensor([[2.0, 0.0, 1.0]]), 2, "after")
    assert experts.tolist() == [[0, 2]]
    torch.testing.assert_close(weights, torch.tensor([[math.e / (math.e + 1), 1 / (math.e + 1)]]))


def test_load_balancing_loss_matches_transformers():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    logits = torch.randn(64, 8)
    _, experts = route(logits, 2)
    expected = load_balancing_loss_func((logits,), num_experts=8, top_k=2)
    torch.testing.assert_close(load_balancing_loss(logits, experts, 8), expected)
    even = torch.zeros(8, 8)  # every expert equally likely, each chosen by 2 of 8 tokens
    assert float(load_balancing_loss(even, torch.arange(8).view(4, 2).repeat(2, 1), 8)) == pytest.approx(2.0)


def test_router_z_loss_against_a_float64_reference():
    logits = torch.randn(20, 5) * 3
    expected = torch.log(torch.exp(logits.double()).sum(-1)).pow(2).mean()
    torch.testing.assert_close(router_z_loss(logits).double(), expected, rtol=1e-5, atol=0)


def _reference_keep(experts: list[list[int]], cap: int) -> list[list[bool]]:
    """GShard's order written as a plain queue: all first choices in token order, then all second choices."""
    taken: dict[int, int] = {}
    keep = [[False] * len(row) for row in experts]
    for slot in range(len(experts[0])):
        for t, row in enumerate(experts):
            e = row[slot]
            if taken.get(e, 0) < cap:
                taken[e] = taken.get(e, 0) + 1
                keep[t][slot] = True
    return keep


def test_capacity_keeps_first_choices_first():
    experts = torch.tensor([[0, 1], [0, 1], [0, 2]])
    assert within_capacity(experts, 3, 2).tolist() == [[True, True], [True, True], [False, True]]
    g = torch.Generator().manual_seed(0)
    for cap in (1, 3, 7):
        experts = torch.stack([torch.randperm(5, generator=g)[:2] for _ in range(30)])
        assert within_capacity(experts, 5, cap).tolist() == _reference_keep(experts.tolist(), cap)
    assert within_capacity(experts, 5, None).all()
    assert capacity(100, 2, 8, 1.25) == 32 and capacity(100, 2, 8, None) is None


@pytest.mark.parametrize("kw", [dict(), dict(router_softmax="before", norm_topk_prob=False, shared_expert_size=40),
                                dict(capacity_factor=0.5), dict(mlp="gelu", bias=True, expert_top_k=1)])
def test_loop_and_batched_paths_agree_in_values_and_gradients(kw):
    torch.manual_seed(0)
    config = _config(**kw)
    moe = MoE(config)
    for p in moe.parameters():  # ones and zeros would hide a wrong weight or bias
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(3, 17, config.n_embd)
    results = []
    for impl in ("loop", "sorted", "batched"):
        moe.impl = impl
        moe.zero_grad()
        y = moe(x)
        (y.pow(2).sum() + moe.aux["balance"] + moe.aux["z"]).backward()
        results.append((y.detach(), {n: p.grad.clone() for n, p in moe.named_parameters()}, moe.load))
    (y1, g1, load1) = results[0]
    for y2, g2, load2 in results[1:]:
        torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
        for name in g1:
            torch.testing.assert_close(g1[name], g2[name], atol=1e-5, rtol=1e-4)
        assert torch.equal(load1["tokens"], load2["tokens"])
    n_assign = 3 * 17 * config.expert_top_k
    assert int(load1["tokens"].sum()) + int(load1["dropped"]) == n_assign
    if config.capacity_factor:
        assert int(load1["dropped"]) > 0  # 0.5 of an even load cannot hold every token
        assert int(load1["tokens"].max()) <= capacity(3 * 17, config.expert_top_k, config.n_expert, 0.5)


def test_sort_by_expert_worked_example():
    experts, weights = torch.tensor([[1, 0], [1, 2]]), torch.tensor([[0.6, 0.4], [0.7, 0.3]])
    token, expert, weight, counts = _sort_by_expert(experts, weights, torch.ones(2, 2, dtype=torch.bool), 3)
    assert token.tolist() == [0, 0, 1, 1] and expert.tolist() == [0, 1, 1, 2] and counts.tolist() == [1, 2, 1]
    torch.testing.assert_close(weight, torch.tensor([0.4, 0.6, 0.7, 0.3]))


def test_auto_path_unknown_path_and_empty_batch():
    moe = MoE(_config())
    for impl in ("loop", "sorted", "batched"):
        moe.impl = impl
        assert moe(torch.randn(1, 0, 32)).shape == (1, 0, 32)
    moe.impl = "auto"
    x = torch.randn(1, 5, 32)
    assert moe._impl_for(x) == "sorted"  # on CPU; "batched" on CUDA
    moe.impl = "fastest"
    with pytest.raises(ValueError, match="fastest"):
        moe(x)


def test_dropped_assignment_leaves_only_the_residual():
    """With room for one assignment per expert, the later tokens get nothing from the experts."""
    torch.manual_seed(0)
    config = _config(expert_top_k=1, capacity_factor=1e-9)
    moe = MoE(config)
    x = torch.randn(1, 10, config.n_embd)
    y = moe(x)
    served = (y[0].abs().sum(-1) > 0).sum()
    assert int(served) == len(set(route(moe.router(x[0]), 1)[1][:, 0].tolist()))  # one token per chosen expert
    assert int(moe.load["dropped"]) == 10 - int(served)


def test_non_linear_experts_take_the_sorted_path():
    from llmlab.finetune.methods import apply_method

    torch.manual_seed(0)
    model = Transformer(_config()).eval()
    idx = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        before = model(idx)
    apply_method(model, {"name": "lora", "rank": 4, "alpha": 8, "targets": ["gate_proj", "up_proj", "down_proj"]})
    assert not model.blocks[0].mlp._stackable()
    with torch.no_grad():  # LoRA's B starts at zero: the same function, now through the sorted path
        model.set_moe("batched")
        torch.testing.assert_close(model(idx), before, atol=1e-5, rtol=0)
        model.set_moe("loop")
        torch.testing.assert_close(model(idx), before, atol=1e-5, rtol=0)


def test_model_aux_loss_and_objective():
    torch.manual_seed(0)
    config = _config(aux_loss_coef=0.1, z_loss_coef=0.01)
    model = Transformer(config)
    idx = torch.randint(0, 101, (2, 16))
    targets = torch.randint(0, 101, (2, 16))
    loss, metrics = moe_lm_loss(model, (idx, targets))
    moes = [b.mlp for b in model.blocks]
    balance = sum(m.aux["balance"] for m in moes) / 2
    z = sum(m.aux["z"] for m in moes) / 2
    torch.testing.assert_close(model.aux_loss(), 0.1 * balance + 0.01 * z)
    torch.testing.assert_close(loss, lm_loss(model, (idx, targets)) + model.aux_loss())
    assert metrics["aux"] == pytest.approx(model.aux_loss().item(), rel=1e-5)
    model.zero_grad()
    model.aux_loss().backward()  # the aux losses alone reach the routers
    assert all(m.router.weight.grad.abs().sum() > 0 for m in moes)
    stats = model.routing_stats()
    assert len(stats) == 2 and all(sum(s["tokens"]) == 2 * 16 * 2 for s in stats)
    dense = Transformer(_config(n_expert=0))
    loss, metrics = with_aux_loss()(dense, (idx, targets))
    assert metrics["aux"] == 0.0 and dense.routing_stats() == []


def test_balance_loss_evens_out_a_skewed_router():
    """Descending the balance loss alone moves router logits that favour one expert towards an even load."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(256, 4, generator=g) + torch.tensor([3.0, 0, 0, 0])).requires_grad_()
    opt = torch.optim.Adam([logits], lr=0.05)
    shares = []
    for _ in range(100):
        _, experts = route(logits, 1)
        shares.append(float(torch.bincount(experts.flatten(), minlength=4).max()) / 256)
        opt.zero_grad()
        load_balancing_loss(logits, experts, 4).backward()
        opt.step()
    assert shares[0] > 0.8 and shares[-1] < 0.4  # 0.25 is even


def test_bad_moe_config_is_one_line_error():
    with pytest.raises(UserError, match="expert_top_k"):
        _config(expert_top_k=5)
    with pytest.raises(UserError, match="capacity_factor"):
        _config(capacity_factor=0.0)
    with pytest.raises(UserError, match="router_softmax"):
        _config(router_softmax="sideways")
