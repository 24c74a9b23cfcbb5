"""Lab: optimizers, planted bugs: learner-style correct answers with one typical mistake each, and the words the
checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

OPTIMIZERS = '''
import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


class SGD(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + group["weight_decay"] * p
                if mu:
                    state = self.state[p]
                    if "b" not in state:
                        state["b"] = g.clone()
                    else:
                        state["b"] = mu * state["b"] + g
                    g = g + mu * state["b"] if group["nesterov"] else state["b"]
                p -= group["lr"] * g


class Adam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["t"] += 1
                t, g = state["t"], p.grad
                state["m"] = b1 * state["m"] + (1 - b1) * g
                state["v"] = b2 * state["v"] + (1 - b2) * g * g
                m_hat = state["m"] / (1 - b1 ** t)
                v_hat = state["v"] / (1 - b2 ** t)
                p -= group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (b1, b2) = group["lr"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                m, g = state["m"], p.grad
                p.mul_(1 - lr * group["weight_decay"])
                p -= lr * torch.sign(b1 * m + (1 - b1) * g)
                state["m"] = b2 * m + (1 - b2) * g


def newton_schulz(G, steps=5):
    a, b, c = NS_COEFFICIENTS
    X = G.float() / (G.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.to(G.dtype)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["b"] = torch.zeros_like(p)
                g = p.grad
                state["b"] = mu * state["b"] + g
                u = g + mu * state["b"] if group["nesterov"] else state["b"]
                R, C = p.shape
                p.mul_(1 - lr * group["weight_decay"])
                p -= lr * max(1, R / C) ** 0.5 * newton_schulz(u, group["ns_steps"])
'''


def _bug(name: str, item: str, old: str, new: str, expect: str) -> Bug:
    return Bug(name, item, planted(OPTIMIZERS, old, new), expect)


BUGS = [
    _bug("sgd-ascends", "SGD", "p -= group[\"lr\"] * g", "p += group[\"lr\"] * g", "moved up the gradient"),
    _bug("sgd-no-momentum", "SGD", "                if mu:\n", "                if False:\n",
         "momentum=0.9 changed nothing"),
    _bug("sgd-averaged-buffer", "SGD", "state[\"b\"] = mu * state[\"b\"] + g", "state[\"b\"] = mu * state[\"b\"] + "
         "(1 - mu) * g", "your buffer is an average"),
    _bug("sgd-nesterov-ignored", "SGD", "if group[\"nesterov\"] else state", "if False else state",
         "nesterov=True changed nothing"),
    _bug("sgd-decay-ignored", "SGD", "g = p.grad + group[\"weight_decay\"] * p", "g = p.grad",
         "weight_decay changed nothing"),
    _bug("sgd-moves-without-grad", "SGD", "                if p.grad is None:\n                    continue\n"
         "                g = p.grad", "                if p.grad is None:\n                    p.grad = "
         "torch.zeros_like(p)\n                g = p.grad", "a parameter without a gradient changed"),
    _bug("adam-no-bias-correction", "Adam", "v_hat = state[\"v\"] / (1 - b2 ** t)", "v_hat = state[\"v\"]",
         "no bias correction"),
    _bug("adam-sums", "Adam", "(1 - b1) * g\n", "g\n", "sums, not averages"),
    _bug("adam-eps-inside", "Adam", "(v_hat.sqrt() + group[\"eps\"])", "(v_hat + group[\"eps\"]).sqrt()",
         "outside the square root"),
    _bug("adam-t-from-zero", "Adam", "                state[\"t\"] += 1\n                t, g = state[\"t\"], p.grad\n",
         "                t, g = state[\"t\"], p.grad\n                state[\"t\"] += 1\n", "NaN or inf"),
    _bug("adam-lr-frozen", "Adam", "                p -= group[\"lr\"] * m_hat", "                p -= "
         "self.defaults[\"lr\"] * m_hat", "ignores changes of group['lr']"),
    _bug("lion-betas-swapped", "Lion", "lr, (b1, b2) = group[\"lr\"], group[\"betas\"]",
         "lr, (b2, b1) = group[\"lr\"], group[\"betas\"]", "betas swapped"),
    _bug("lion-momentum-first", "Lion", "                p -= lr * torch.sign(b1 * m + (1 - b1) * g)\n"
         "                state[\"m\"] = b2 * m + (1 - b2) * g\n", "                m = state[\"m\"] = b2 * m + "
         "(1 - b2) * g\n                p -= lr * torch.sign(b1 * m + (1 - b1) * g)\n", "before the step"),
    _bug("lion-no-sign", "Lion", "torch.sign(b1 * m + (1 - b1) * g)", "(b1 * m + (1 - b1) * g)", "no sign"),
    _bug("lion-decay-without-lr", "Lion", "p.mul_(1 - lr * group[\"weight_decay\"])",
         "p.mul_(1 - group[\"weight_decay\"])", "not multiplied by lr"),
    _bug("lion-divides-by-abs", "Lion", "torch.sign(b1 * m + (1 - b1) * g)",
         "(b1 * m + (1 - b1) * g) / (b1 * m + (1 - b1) * g).abs()", "NaN or inf"),
    _bug("ns-not-normalised", "newton_schulz", "G.float() / (G.norm() + 1e-7)", "G.float()", "Frobenius norm"),
    _bug("ns-right-multiply", "newton_schulz", "(b * A + c * A @ A) @ X", "X @ (b * A + c * A @ A)",
         "multiply from the left"),
    _bug("ns-steps-ignored", "newton_schulz", "for _ in range(steps):", "for _ in range(5):",
         "the steps argument is ignored"),
    _bug("ns-in-place", "newton_schulz", "    X = G.float() / (G.norm() + 1e-7)\n",
         "    G /= G.norm() + 1e-7\n    X = G.float()\n", "changed G in place"),
    _bug("ns-float32-out", "newton_schulz", "return X.to(G.dtype)", "return X", "return G's dtype"),
    _bug("muon-no-orthogonalisation", "Muon", "newton_schulz(u, group[\"ns_steps\"])", "u", "momentum only"),
    _bug("muon-no-scale", "Muon", "lr * max(1, R / C) ** 0.5 * newton", "lr * newton", "no shape scale"),
    _bug("muon-scale-inverted", "Muon", "max(1, R / C) ** 0.5", "max(1, C / R) ** 0.5", "rows over columns"),
    Bug("muon-orthogonalise-first", "Muon", planted(planted(
        OPTIMIZERS, "                g = p.grad\n", "                g = newton_schulz(p.grad, group[\"ns_steps\"])\n"),
        "newton_schulz(u, group[\"ns_steps\"])", "u"), "then take momentum"),
    _bug("muon-nesterov-ignored", "Muon", "if group[\"nesterov\"] else", "if False else", "nesterov=True is ignored"),
    _bug("muon-decay-without-lr", "Muon", "p.mul_(1 - lr * group[\"weight_decay\"])",
         "p.mul_(1 - group[\"weight_decay\"])", "not multiplied by lr"),
]

ALTERNATIVES = [  # llmlab's averaged (lerp) momentum in Muon: a rescaled buffer, the same step after Newton-Schulz;
    # a tall matrix orthogonalised through its transpose, in float64; SGD's buffer started at zeros
    planted(OPTIMIZERS, "state[\"b\"] = mu * state[\"b\"] + g\n                u = g + mu * state[\"b\"]",
            "state[\"b\"] = state[\"b\"].lerp(g, 1 - mu)\n                u = g.lerp(state[\"b\"], mu)"),
    planted(planted(OPTIMIZERS, "    return X.to(G.dtype)\n", "    return (X.T if tall else X).to(G.dtype)\n"),
            "    X = G.float() / (G.norm() + 1e-7)\n",
            "    tall = G.shape[0] > G.shape[1]\n    X = (G.T if tall else G).double() / (G.norm() + 1e-7)\n"),
    planted(OPTIMIZERS, "                    if \"b\" not in state:\n                        state[\"b\"] = g.clone()\n"
            "                    else:\n                        state[\"b\"] = mu * state[\"b\"] + g\n",
            "                    b = state.setdefault(\"b\", torch.zeros_like(p))\n"
            "                    b.mul_(mu).add_(g)\n"),
]
