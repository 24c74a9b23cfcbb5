"""Lab: pytorch-basics, planted bugs: learner-style correct answers with one typical mistake each, and the
words the checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

BASICS = '''
import torch


def pairwise_sq_distances(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def normalize_rows(x):
    return x / x.norm(dim=1, keepdim=True)


def linear(x, weight, bias):
    return x @ weight.T + bias


def softmax(x, dim=-1):
    e = (x - x.max(dim=dim, keepdim=True).values).exp()
    return e / e.sum(dim=dim, keepdim=True)


def mse_grad(w, x, y):
    return 2 * x.T @ (x @ w - y) / len(y)
'''

BUGS = [
    Bug("distances-transposed", "pairwise_sq_distances", planted(BASICS, "x[:, None, :] - y[None, :, :]",
                                                                 "x[None, :, :] - y[:, None, :]"), "returned (M, N)"),
    Bug("distances-not-squared", "pairwise_sq_distances", planted(BASICS, "** 2).sum(-1)", "** 2).sum(-1).sqrt()"),
        "square them"),
    Bug("distances-mean", "pairwise_sq_distances", planted(BASICS, "** 2).sum(-1)", "** 2).mean(-1)"),
        "don't average them"),
    Bug("normalize-without-keepdim", "normalize_rows", planted(BASICS, "x.norm(dim=1, keepdim=True)", "x.norm(dim=1)"),
        "keepdim=True"),
    Bug("normalize-columns", "normalize_rows", planted(BASICS, "x.norm(dim=1, keepdim=True)",
                                                       "x.norm(dim=0, keepdim=True)"), "rows are dim=1"),
    Bug("linear-untransposed", "linear", planted(BASICS, "x @ weight.T + bias", "x @ weight + bias"), "use weight.T"),
    Bug("linear-no-bias", "linear", planted(BASICS, "x @ weight.T + bias", "x @ weight.T"), "the bias is missing"),
    Bug("softmax-unstable", "softmax", planted(BASICS, "(x - x.max(dim=dim, keepdim=True).values).exp()", "x.exp()"),
        "subtract the max"),
    Bug("softmax-ignores-dim", "softmax", planted(BASICS, "dim=dim", "dim=-1"), "instead of dim="),
    Bug("mse-grad-no-two", "mse_grad", planted(BASICS, "2 * x.T @ (x @ w - y)", "x.T @ (x @ w - y)"), "factor 2"),
    Bug("mse-grad-sum", "mse_grad", planted(BASICS, " / len(y)", ""), "the mean divides by N"),
    Bug("mse-grad-sign", "mse_grad", planted(BASICS, "(x @ w - y)", "(y - x @ w)"), "wrong sign"),
]

ALTERNATIVES = [  # the expanded square, torch's own reductions
    planted(planted(BASICS, "((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)",
                    "(x ** 2).sum(1)[:, None] + (y ** 2).sum(1)[None, :] - 2 * x @ y.T"),
            "x / x.norm(dim=1, keepdim=True)", "x / torch.sqrt((x * x).sum(dim=1, keepdim=True))"),
]
