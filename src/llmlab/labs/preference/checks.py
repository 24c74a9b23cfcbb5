"""Lab: preference, the checks. References are the formulas in torch (`F.log_softmax`, `F.logsigmoid`), which
llmlab's own losses match and which its tests hold equal to TRL's; gradients are compared where they train
the model. Typical mistakes (a mean over tokens, the reference's sign, an unstable log(sigmoid)) are named.
"""

import torch
import torch.nn.functional as F

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor

CHECKS = CheckList()


def _batch(B: int = 3, T: int = 7, V: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.randn(B, T, V) * 2
    targets = torch.randint(0, V, (B, T))
    targets[:, :3] = -100  # the prompt
    targets[0, -1] = -100  # padding after a shorter completion
    return logits, targets


def _token_logps(logits, targets):
    keep = targets != -100
    logps = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, T)
    return logps, keep


@CHECKS.add("completion_logprob", "sums log p(target) over the completion's positions only, (B,), with gradients")
def logprob(ws: Workspace) -> None:
    logits, targets = _batch()
    logits.requires_grad_()
    out = expect_tensor(call(ws.get("completion_logprob"), logits, targets), (3,), "completion_logprob")
    logps, keep = _token_logps(logits, targets)
    expected = (logps * keep).sum(-1)
    with torch.no_grad():
        diagnose(out, expected, {
            "sum the completion's token log-probabilities, don't average them: a sequence's log-probability is "
            "the sum": (logps * keep).sum(-1) / keep.sum(-1),
            "positions whose target is -100 (prompt, padding) must not count: mask them out": logps.sum(-1),
            "use log-probabilities (log_softmax), not probabilities": (logits.softmax(-1).gather(
                -1, targets.clamp(min=0)[..., None])[..., 0] * keep).sum(-1),
            "log_softmax over the vocabulary (the last axis), not over positions": lambda: (
                logits.log_softmax(1).gather(-1, targets.clamp(min=0)[..., None])[..., 0] * keep).sum(-1),
            "you used the raw logits: take log_softmax first": (logits.gather(
                -1, targets.clamp(min=0)[..., None])[..., 0] * keep).sum(-1),
        }, "differs from the sum of log_softmax(logits) at the targets over the completion", atol=1e-4)
    (grad,) = torch.autograd.grad(out.sum(), logits, allow_unused=True)
    if grad is None or not close(grad, torch.autograd.grad(expected.sum(), logits)[0], atol=1e-5):
        raise CheckFailed("the gradient with respect to the logits differs: the policy could not train through it")


@CHECKS.add("bradley_terry_loss", "mean of -log sigmoid(r_c - r_r), stable for large differences")
def bradley_terry(ws: Workspace) -> None:
    fn = ws.get("bradley_terry_loss")
    rc, rr = torch.randn(8), torch.randn(8)
    out = expect_tensor(call(fn, rc, rr), (), "bradley_terry_loss")
    diff = rc - rr
    diagnose(out, -F.logsigmoid(diff).mean(), {
        "chosen minus rejected: the loss must fall as the chosen reward rises": -F.logsigmoid(-diff).mean(),
        "take the mean over the batch, not the sum": -F.logsigmoid(diff).sum(),
        "the minus sign is missing: the loss is -log sigmoid(...)": F.logsigmoid(diff).mean(),
    }, "differs from -logsigmoid(r_chosen - r_rejected).mean()")
    far = torch.tensor([-200.0, 150.0]), torch.tensor([0.0, 0.0])
    out = call(fn, *far)
    if not isinstance(out, torch.Tensor) or not torch.isfinite(out):
        raise CheckFailed("inf or NaN when the rewards differ by 200: log(sigmoid(x)) underflows; use "
                          "F.logsigmoid(x)")
    if not close(out, -F.logsigmoid(far[0] - far[1]).mean()):
        raise CheckFailed("wrong when the rewards differ by 200: use F.logsigmoid, stable at both ends")


@CHECKS.add("dpo_loss", "DPO from policy and reference log-probabilities; beta used; gradients only to the policy")
def dpo(ws: Workspace) -> None:
    fn = ws.get("dpo_loss")
    pc, pr = (torch.randn(6) * 5 - 20).requires_grad_(), (torch.randn(6) * 5 - 20).requires_grad_()
    rc, rr = torch.randn(6) * 5 - 20, torch.randn(6) * 5 - 20
    for beta in (0.1, 0.5):
        out = expect_tensor(call(fn, pc, pr, rc, rr, beta=beta), (), f"dpo_loss(beta={beta})")
        delta = (pc - rc) - (pr - rr)
        expected = -F.logsigmoid(beta * delta).mean()
        with torch.no_grad():
            diagnose(out, expected, {
                "beta is not applied: scale the difference of log-ratios by beta": -F.logsigmoid(delta).mean(),
                "the reference is missing: each log-probability is measured against the reference's "
                "(policy - reference)": -F.logsigmoid(beta * (pc - pr)).mean(),
                "a reference term has the wrong sign: (policy_chosen - ref_chosen) - (policy_rejected - "
                "ref_rejected)": (-F.logsigmoid(beta * ((pc + rc) - (pr + rr))).mean(),
                                  -F.logsigmoid(beta * ((pc - rc) - (pr + rr))).mean()),
                "chosen and rejected are swapped: the loss must fall as the chosen completion gets likelier":
                    -F.logsigmoid(-beta * delta).mean(),
                "take the mean over the batch, not the sum": -F.logsigmoid(beta * delta).sum(),
            }, f"differs from DPO's loss at beta={beta}")
    out = call(fn, pc, pr, rc, rr, beta=0.1)
    grads = torch.autograd.grad(out, (pc, pr), allow_unused=True)
    if any(g is None for g in grads):
        raise CheckFailed("no gradient reaches the policy's log-probabilities: did you detach them?")
