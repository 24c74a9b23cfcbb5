"""DiLoCo: the outer step against a hand computation and torch.optim.SGD, the K=1/H=1 limit, two-worker sync."""

import pytest
import torch

from llmlab.models import Transformer, get_preset
from llmlab.train.collectives import FORMULAS
from llmlab.train.diloco import DiLoCo, NesterovSGD, trainable_params
from llmlab.train.objectives import causal_lm_loss
from llmlab.train.spawn import spawn


def test_outer_step_by_hand_and_against_torch_sgd():
    torch.manual_seed(0)
    theta0 = torch.randn(5)
    grads = [torch.randn(5) for _ in range(3)]
    lr, mu = 0.7, 0.9
    # by hand: v_t = mu v_{t-1} + g_t; theta_t = theta_{t-1} - lr (g_t + mu v_t)
    theta, v = theta0.clone(), torch.zeros(5)
    for g in grads:
        v = mu * v + g
        theta = theta - lr * (g + mu * v)
    ours = [theta0.clone()]
    outer = NesterovSGD(ours, lr, mu)
    ref = torch.nn.Parameter(theta0.clone())
    sgd = torch.optim.SGD([ref], lr=lr, momentum=mu, nesterov=True)
    for g in grads:
        outer.step([g])
        ref.grad = g.clone()
        sgd.step()
    torch.testing.assert_close(ours[0], theta)
    torch.testing.assert_close(ours[0], ref.detach())


def test_heavy_ball_matches_torch_sgd():
    torch.manual_seed(1)
    ours, ref = [torch.randn(4)], torch.nn.Parameter(torch.randn(4))
    ref.data.copy_(ours[0])
    outer, sgd = NesterovSGD(ours, 0.5, 0.8, nesterov=False), torch.optim.SGD([ref], lr=0.5, momentum=0.8)
    for _ in range(3):
        g = torch.randn(4)
        outer.step([g])
        ref.grad = g
        sgd.step()
    torch.testing.assert_close(ours[0], ref.detach())


def test_one_worker_one_step_lr_one_no_momentum_is_plain_training():
    cfg = get_preset("llama-tiny", vocab_size=64, seq_len=16, n_layer=1)
    batches = [torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    models = []
    for use_diloco in (False, True):
        torch.manual_seed(0)
        model = Transformer(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        diloco = DiLoCo(model, outer_lr=1.0, outer_momentum=0.0) if use_diloco else None
        for b in batches:
            causal_lm_loss(model(b[:, :-1]), b[:, 1:]).backward()
            opt.step()
            opt.zero_grad()
            if diloco:
                diloco.sync()
        models.append(model)
    for p, q in zip(trainable_params(models[0]), trainable_params(models[1]), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5)  # theta - (theta - p) rounds; a wrong step is ~lr


def _two_workers(rank: int, world: int) -> dict:
    out = {}
    for compress in ("none", "int8-row"):
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 32)
        theta0 = [p.detach().clone() for p in model.parameters()]
        diloco = DiLoCo(model, compress=compress)
        with torch.no_grad():  # each worker "trained" somewhere else
            torch.manual_seed(100 + rank)
            for p in model.parameters():
                p.add_(torch.randn_like(p) * (rank + 1))
        moved = [p.detach().clone() for p in model.parameters()]
        diloco.sync()
        out[compress] = {"theta0": theta0, "moved": moved, "global": [g.clone() for g in diloco.global_params],
                         "local": [p.detach().clone() for p in model.parameters()], "bytes": diloco.bytes_sent()}
    return out


def test_two_workers_average_pseudo_gradients_then_step():
    results = spawn(_two_workers, 2, timeout=120)
    n_bytes = sum(t.numel() * 4 for t in results[0]["none"]["theta0"])
    for compress in ("none", "int8-row"):
        r0, r1 = results[0][compress], results[1][compress]
        for i, theta0 in enumerate(r0["theta0"]):
            mean_delta = ((theta0 - r0["moved"][i]) + (theta0 - r1["moved"][i])) / 2
            expected = theta0 - 0.7 * (mean_delta + 0.9 * mean_delta)  # first Nesterov step: v = g
            # every worker holds the same global weights, and its model restarts from them
            assert torch.equal(r0["global"][i], r1["global"][i]) and torch.equal(r0["local"][i], r0["global"][i])
            if compress == "none":
                torch.testing.assert_close(r0["global"][i], expected)
            else:  # int8: within a few quantisation steps of the float result, scaled by the outer step
                step = max(d.abs().max() for d in (theta0 - r0["moved"][i], theta0 - r1["moved"][i])) / 127
                assert (r0["global"][i] - expected).abs().max() <= 0.7 * 1.9 * step
    assert results[0]["none"]["bytes"] == FORMULAS["all_reduce"](n_bytes, 2)
    assert results[0]["none"]["bytes"] / 4 < results[0]["int8-row"]["bytes"] < results[0]["none"]["bytes"] / 3.5


def test_bad_settings():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="compress"):
        DiLoCo(model, compress="int4")
    with pytest.raises(ValueError, match="outer lr"):
        DiLoCo(model, outer_lr=0)
    with pytest.raises(ValueError, match="momentum"):
        DiLoCo(model, outer_momentum=1.0)
