"""Lab: preference, planted bugs: learner-style correct answers with one typical mistake each, and the words
the checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

PREFERENCE = '''
import torch
import torch.nn.functional as F


def completion_logprob(logits, targets):
    keep = targets != -100
    logps = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logps * keep).sum(-1)


def bradley_terry_loss(chosen_rewards, rejected_rewards):
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1):
    delta = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * delta).mean()
'''

BUGS = [
    Bug("logprob-mean", "completion_logprob", planted(PREFERENCE, "(logps * keep).sum(-1)",
                                                      "(logps * keep).sum(-1) / keep.sum(-1)"), "don't average"),
    Bug("logprob-counts-prompt", "completion_logprob", planted(PREFERENCE, "(logps * keep).sum(-1)", "logps.sum(-1)"),
        "must not count"),
    Bug("logprob-probabilities", "completion_logprob", planted(PREFERENCE, "log_softmax(-1)", "softmax(-1)"),
        "not probabilities"),
    Bug("bt-unstable", "bradley_terry_loss", planted(
        PREFERENCE, "-F.logsigmoid(chosen_rewards - rejected_rewards).mean()",
        "-torch.log(torch.sigmoid(chosen_rewards - rejected_rewards)).mean()"), "use F.logsigmoid"),
    Bug("bt-swapped", "bradley_terry_loss", planted(PREFERENCE, "chosen_rewards - rejected_rewards",
                                                    "rejected_rewards - chosen_rewards"), "chosen minus rejected"),
    Bug("dpo-no-beta", "dpo_loss", planted(PREFERENCE, "F.logsigmoid(beta * delta)", "F.logsigmoid(delta)"),
        "beta is not applied"),
    Bug("dpo-no-reference", "dpo_loss", planted(
        PREFERENCE, "delta = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)",
        "delta = policy_chosen - policy_rejected"), "the reference is missing"),
    Bug("dpo-reference-sign", "dpo_loss", planted(PREFERENCE, "(policy_rejected - ref_rejected)",
                                                  "(policy_rejected + ref_rejected)"), "wrong sign"),
    Bug("dpo-detached", "dpo_loss", planted(PREFERENCE, "delta = (policy_chosen - ref_chosen)",
                                            "delta = (policy_chosen.detach() - ref_chosen)"), "did you detach"),
]

ALTERNATIVES = [  # cross_entropy for the token log-probabilities, softplus for -logsigmoid
    planted(planted(PREFERENCE, '''    keep = targets != -100
    logps = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logps * keep).sum(-1)''', '''    B, T, V = logits.shape
    losses = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), reduction="none")  # 0 at -100
    return -losses.view(B, T).sum(-1)'''), "-F.logsigmoid(beta * delta).mean()", "F.softplus(-beta * delta).mean()"),
]
