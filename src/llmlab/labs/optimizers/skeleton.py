"""Lab: optimizers. Fill in the bodies below, then run `llmlab labs check optimizers` (or the notebook).

Each optimizer is a torch.optim.Optimizer: __init__ is written for you (it stores the hyperparameters in
self.param_groups, a list of dicts, each with its own "params" and settings); you write step(), which
changes every parameter p that has a gradient p.grad, in place. Per-parameter memory (momentum, moments)
lives in self.state[p], a dict that starts empty. Skip parameters whose .grad is None.
"""

import torch


class SGD(torch.optim.Optimizer):
    """Stochastic gradient descent with momentum, as torch.optim.SGD.

    g = p.grad + weight_decay * p               (L2 decay, through the gradient)
    without momentum: p = p - lr * g
    with momentum mu > 0: b = mu * b + g (b starts as g itself at the first step), then
        p = p - lr * b                           (heavy ball), or
        p = p - lr * (g + mu * b)                (nesterov=True: a look at where b is taking p)
    """

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:
        raise NotImplementedError("TODO: per group, per p with a grad: decay, momentum buffer, update")


class Adam(torch.optim.Optimizer):
    """Adam (Kingma & Ba 2015), as torch.optim.Adam without weight decay.

    At step t = 1, 2, ... of each parameter (count it in self.state[p]), with m and v starting at zeros:
        m = beta1 * m + (1 - beta1) * g,   v = beta2 * v + (1 - beta2) * g^2
        p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self) -> None:
        raise NotImplementedError("TODO: the two moments, bias correction, the step")


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of a momentum.

    With m starting at zeros:
        p = p * (1 - lr * weight_decay)                     (decoupled decay, as AdamW)
        p = p - lr * sign(beta1 * m + (1 - beta1) * g)      (the step interpolates with beta1 ...)
        m = beta2 * m + (1 - beta2) * g                     (... the momentum kept uses beta2)
    Every coordinate moves by exactly lr (plus the decay), so Lion's lr is 3-10x smaller than Adam's.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:
        raise NotImplementedError("TODO: decay, the signed step, then the momentum")


NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic: (a, b, c)


def newton_schulz(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalise a matrix G (R, C): about U V^T for G = U S V^T, every singular value near 1.

    Scale G to unit Frobenius norm (X = G / (||G|| + 1e-7)), so every singular value is at most 1, then
    `steps` times:  A = X X^T;  X = a X + (b A + c A A) X,  with (a, b, c) = NS_COEFFICIENTS.
    Each step maps every singular value s to a s + b s^3 + c s^5, which pushes them all into about [0.7, 1.2]
    in five steps (a rough orthogonalisation, fast, is what Muon wants). Returns X, the shape and dtype of G.
    For a tall G (R > C), running on G^T and transposing back makes A the smaller (C, C): optional. Work in
    float32 or float64 (GPUs run Muon's in bf16; the checks compare with float32).
    """
    raise NotImplementedError("TODO: normalise, iterate the quintic, return")


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024): momentum whose update of each weight matrix is orthogonalised.

    For 2-D parameters only (the hidden weight matrices; embeddings, norms and biases go to Adam). With b
    starting at zeros:
        b = momentum * b + g
        u = g + momentum * b  if nesterov  else  b
        p = p * (1 - lr * weight_decay)
        p = p - lr * sqrt(max(1, R / C)) * newton_schulz(u, ns_steps)      for p of shape (R, C)
    The orthogonalised update has every singular value near 1: it moves every direction of the matrix alike,
    however different their gradients' sizes. sqrt(max(1, R / C)) keeps the step's per-entry size the same
    for tall matrices.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:
        raise NotImplementedError("TODO: momentum, newton_schulz, the scaled step")
