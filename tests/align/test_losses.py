"""Preference losses against TRL's own code for the same log-probabilities: DPO's sigmoid, IPO and hinge
(DPOTrainer), cDPO's label smoothing and SimPO (CPOTrainer.cpo_loss), ORPO's odds ratio
(ORPOTrainer.odds_ratio_loss), called as unbound methods on a namespace holding their settings."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from llmlab.align.losses import bradley_terry_loss, dpo_loss, log1mexp, orpo_loss, simpo_loss

pytest.importorskip("trl")
from trl.experimental.cpo.cpo_trainer import CPOTrainer  # noqa: E402
from trl.experimental.orpo.orpo_trainer import ORPOTrainer  # noqa: E402
from trl.experimental.orpo.orpo_trainer import log1mexp as trl_log1mexp  # noqa: E402

CPU = SimpleNamespace(device="cpu")


def logps(seed: int, n: int = 16, scale: float = 30.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [-scale * torch.rand(n, generator=g, dtype=torch.float64) for _ in range(4)]


def cpo(loss_type: str, beta: float, label_smoothing: float = 0.0, gamma: float = 0.5):
    ns = SimpleNamespace(alpha=0.0, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
                         simpo_gamma=gamma, accelerator=CPU)
    return lambda c, r: CPOTrainer.cpo_loss(ns, c, r)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_equals_trl_reference_free_form_on_log_ratios(loss_type, beta):
    """CPO's loss on (policy - reference) log-ratios is DPO's loss: TRL's DPO and CPO share these formulas.
    IPO uses per-token averages in TRL's DPO, so its lengths are passed as 1 here (sums = averages)."""
    pc, pr, rc, rr = logps(0)
    ones = torch.ones_like(pc)
    ours, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta, loss_type, chosen_lengths=ones, rejected_lengths=ones)
    losses, _, _ = cpo(loss_type, beta)(pc - rc, pr - rr)
    torch.testing.assert_close(ours, losses.mean(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chosen_r, beta * (pc - rc))
    torch.testing.assert_close(rejected_r, beta * (pr - rr))


def test_dpo_label_smoothing_is_cdpo():
    pc, pr, rc, rr = logps(1)
    ours, _, _ = dpo_loss(pc, pr, rc, rr, 0.2, "sigmoid", label_smoothing=0.1)
    losses, _, _ = cpo("sigmoid", 0.2, label_smoothing=0.1)(pc - rc, pr - rr)
    torch.testing.assert_close(ours, losses.mean())


def test_ipo_averages_each_log_ratio_over_its_tokens():
    """TRL's DPOTrainer (1.16): (Δc/n_c - Δr/n_r - 1/(2β))², written out independently."""
    pc, pr, rc, rr = logps(2)
    nc, nr = torch.randint(1, 40, (16,)).double(), torch.randint(1, 40, (16,)).double()
    ours, _, _ = dpo_loss(pc, pr, rc, rr, 0.3, "ipo", chosen_lengths=nc, rejected_lengths=nr)
    expected = (((pc - rc) / nc - (pr - rr) / nr - 1 / 0.6) ** 2).mean()
    torch.testing.assert_close(ours, expected)
    with pytest.raises(ValueError, match="lengths"):
        dpo_loss(pc, pr, rc, rr, 0.3, "ipo")
    with pytest.raises(ValueError, match="unknown"):
        dpo_loss(pc, pr, rc, rr, 0.3, "kto")


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.4])
def test_simpo_equals_trl_cpo_simpo(gamma):
    pc, pr, _, _ = logps(3, scale=3.0)  # mean log-probabilities are small
    ours, chosen_r, rejected_r = simpo_loss(pc, pr, beta=2.5, gamma=gamma, label_smoothing=0.05)
    losses, trl_c, trl_r = cpo("simpo", 2.5, label_smoothing=0.05, gamma=gamma)(pc, pr)
    torch.testing.assert_close(ours, losses.mean())
    torch.testing.assert_close(chosen_r, trl_c)
    torch.testing.assert_close(rejected_r, trl_r)


def test_orpo_equals_trl_odds_ratio_loss():
    pc, pr, _, _ = logps(4, scale=2.0)
    ours, chosen_r, rejected_r = orpo_loss(pc, pr, beta=0.1)
    losses, trl_c, trl_r, _, _ = ORPOTrainer.odds_ratio_loss(SimpleNamespace(beta=0.1, accelerator=CPU), pc, pr)
    torch.testing.assert_close(ours, -losses.mean())  # TRL returns β log σ and subtracts it from the NLL
    torch.testing.assert_close(chosen_r, trl_c)
    torch.testing.assert_close(rejected_r, trl_r)
    x = -torch.logspace(-8, 2, 50, dtype=torch.float64)
    torch.testing.assert_close(log1mexp(x), trl_log1mexp(x))


def test_bradley_terry_against_the_formula_and_torch():
    g = torch.Generator().manual_seed(5)
    rc, rr = torch.randn(32, generator=g), torch.randn(32, generator=g)
    # -log σ(d) is binary cross-entropy with target 1 on the logit d
    expected = F.binary_cross_entropy_with_logits(rc - rr, torch.ones(32))
    torch.testing.assert_close(bradley_terry_loss(rc, rr), expected)
    torch.testing.assert_close(bradley_terry_loss(rc, rr, margin=0.5),
                               F.binary_cross_entropy_with_logits(rc - rr - 0.5, torch.ones(32)))
    assert bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(0.126928, abs=1e-6)
