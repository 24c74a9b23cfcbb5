"""A scalar autograd engine in the micrograd style, a tiny MLP on it, and a two-moons classifier to train.

`Value` wraps one float. Every operation makes a new `Value` that remembers its inputs and how to push a
gradient back to them (the chain rule, one local derivative per op). `backward()` orders the graph
topologically (an explicit stack, not recursion, so a graph thousands of ops deep does not hit Python's
recursion limit) and walks it from the output back. This is reverse-mode automatic differentiation
(Linnainmaa 1970; Rumelhart, Hinton & Williams 1986), as in Karpathy's micrograd, which this follows.

Gradients behave like torch's: a leaf (a Value made from a number) accumulates `grad` over repeated
`backward()` calls until `zero_grad`; an intermediate node's `grad` holds the gradient of the latest
backward only.

Worked example: a = 2, b = -3, c = a*b + a**2 = -2; backward gives dc/da = b + 2a = 1 and dc/db = a = 2.

Out-of-domain input is an error, never a silent nan: `log` of x <= 0 and a non-integer power of a negative
number raise ValueError, division by zero raises ZeroDivisionError, `exp` past ~709 raises OverflowError
(torch would return nan, -inf or inf and let them spread through the training run). At x = 0 the
derivative of x**k for 0 < k < 1 is infinite, and is returned as inf, as torch does.

Not here: tensors, batching, any speed. For those, `backprop.py` does the same by hand on torch tensors.
"""

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from llmlab.common.io import atomic_write

Number = int | float


class Value:
    """One scalar in a computation graph: its value `data`, its gradient `grad`, and how it was made.

    Each op stores its inputs in `_prev` and the local derivative d(out)/d(input) of each in `_local`, both
    known at forward time. Backward is then one rule for every op: input.grad += local * out.grad.
    (micrograd keeps a closure per node instead; closures that refer back to their node make reference
    cycles, and on a 70k-node graph Python's cycle collector then took 8x the time of the arithmetic.)
    """

    __slots__ = ("data", "grad", "_prev", "_local", "_op")

    def __init__(self, data: Number, _prev: tuple["Value", ...] = (), _local: tuple[float, ...] = (),
                 _op: str = ""):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise TypeError(f"Value holds a number, got {type(data).__name__}")
        self.data = float(data)
        self.grad = 0.0
        self._prev = _prev
        self._local = _local
        self._op = _op

    def __repr__(self) -> str:
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"

    def __add__(self, other: "Value | Number") -> "Value":
        other = as_value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0), "+")

    def __mul__(self, other: "Value | Number") -> "Value":
        other = as_value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data), "*")

    def __pow__(self, k: Number) -> "Value":
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise TypeError(f"only a number exponent is supported (x ** 2.0), got {type(k).__name__}")
        if self.data < 0 and not float(k).is_integer():
            raise ValueError(f"{self.data} ** {k}: a negative number to a non-integer power is not real")
        if self.data == 0 and k < 0:
            raise ZeroDivisionError(f"0 ** {k}: zero to a negative power")
        return Value(self.data**k, (self,), (_pow_derivative(self.data, k),), f"**{k}")

    def exp(self) -> "Value":
        e = math.exp(self.data)  # OverflowError past ~709, rather than inf
        return Value(e, (self,), (e,), "exp")

    def log(self) -> "Value":
        if self.data <= 0:
            raise ValueError(f"log({self.data}): the logarithm needs a positive number")
        return Value(math.log(self.data), (self,), (1.0 / self.data,), "log")

    def tanh(self) -> "Value":
        t = math.tanh(self.data)
        return Value(t, (self,), (1.0 - t * t,), "tanh")

    def relu(self) -> "Value":
        return Value(max(self.data, 0.0), (self,), (float(self.data > 0),), "relu")  # slope 0 at x = 0, as torch

    def __neg__(self) -> "Value":
        return self * -1

    def __sub__(self, other: "Value | Number") -> "Value":
        return self + (-as_value(other))

    def __truediv__(self, other: "Value | Number") -> "Value":
        return self * as_value(other) ** -1

    def __radd__(self, other: Number) -> "Value":
        return self + other

    def __rmul__(self, other: Number) -> "Value":
        return self * other

    def __rsub__(self, other: Number) -> "Value":
        return as_value(other) + (-self)

    def __rtruediv__(self, other: Number) -> "Value":
        return as_value(other) * self**-1

    def backward(self) -> None:
        """Fill `grad` of every node this Value depends on with d(self)/d(node)."""
        order = topological_order(self)
        for node in order:
            if node._prev:  # intermediate grads are per-backward; leaves accumulate, as in torch
                node.grad = 0.0
        self.grad = 1.0 if self._prev else self.grad + 1.0
        for node in reversed(order):  # outputs before inputs: a node's grad is complete when it is reached
            for child, local in zip(node._prev, node._local, strict=True):
                child.grad += local * node.grad  # the chain rule


def _pow_derivative(x: float, k: Number) -> float:
    """d/dx x**k = k * x**(k-1); at x = 0 it is 0 for k = 0 or k > 1, 1 for k = 1, inf for 0 < k < 1."""
    if x == 0 and k <= 1:
        return 0.0 if k == 0 else (1.0 if k == 1 else math.inf)
    return k * x ** (k - 1)


def as_value(x: "Value | Number") -> Value:
    return x if isinstance(x, Value) else Value(x)


def topological_order(root: Value) -> list[Value]:
    """Every node `root` depends on, each after all of its inputs (iterative depth-first post-order).

    >>> a = Value(2.0); b = a * 3; c = b + a
    >>> [n.data for n in topological_order(c)]
    [2.0, 3.0, 6.0, 8.0]
    """
    order: list[Value] = []
    seen: set[int] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))  # popped again once every input below it is in `order`
        stack.extend((child, False) for child in node._prev if id(child) not in seen)
    return order


class Neuron:
    """sum_i w_i * x_i + b, then ReLU unless `linear`. Weights start uniform in [-1, 1] as in micrograd."""

    def __init__(self, nin: int, rng: random.Random, linear: bool = False):
        self.w = [Value(rng.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0.0)
        self.linear = linear

    def __call__(self, x: list[Value | Number]) -> Value:
        act = sum((wi * xi for wi, xi in zip(self.w, x, strict=True)), self.b)
        return act if self.linear else act.relu()

    def parameters(self) -> list[Value]:
        return self.w + [self.b]


class Layer:
    def __init__(self, nin: int, nout: int, rng: random.Random, linear: bool = False):
        self.neurons = [Neuron(nin, rng, linear) for _ in range(nout)]

    def __call__(self, x: list[Value | Number]) -> list[Value]:
        return [n(x) for n in self.neurons]

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]


class MLP:
    """Layers of ReLU neurons; the last layer is linear (it outputs scores, not features)."""

    def __init__(self, nin: int, nouts: list[int], seed: int = 0):
        if nin < 1 or not nouts or min(nouts) < 1:
            raise ValueError(f"MLP needs nin >= 1 and at least one layer of width >= 1, got {nin}, {nouts}")
        rng = random.Random(seed)
        sizes = [nin, *nouts]
        self.layers = [Layer(sizes[i], sizes[i + 1], rng, linear=i == len(nouts) - 1) for i in range(len(nouts))]

    def __call__(self, x: list[Value | Number]) -> list[Value]:
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


def make_moons(n_samples: int = 100, noise: float = 0.1, seed: int = 0) -> tuple[list[tuple[float, float]], list[int]]:
    """Two interleaved half circles, as scikit-learn's `make_moons`: points and labels -1 (upper) / +1 (lower)."""
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2, got {n_samples}")
    rng = random.Random(seed)
    n_upper = n_samples // 2
    n_lower = n_samples - n_upper
    points, labels = [], []
    for i in range(n_upper):
        t = math.pi * i / max(n_upper - 1, 1)
        points.append((math.cos(t), math.sin(t)))
        labels.append(-1)
    for i in range(n_lower):
        t = math.pi * i / max(n_lower - 1, 1)
        points.append((1 - math.cos(t), 0.5 - math.sin(t)))
        labels.append(1)
    points = [(x + rng.gauss(0, noise), y + rng.gauss(0, noise)) for x, y in points]
    order = list(range(n_samples))
    rng.shuffle(order)
    return [points[i] for i in order], [labels[i] for i in order]


def hinge_loss(model: MLP, points: list[tuple[float, float]], labels: list[int], alpha: float) -> tuple[Value, float]:
    """Mean SVM max-margin loss relu(1 - y * score) plus alpha * sum(p^2), and the accuracy (sign of score)."""
    scores = [model(list(p))[0] for p in points]
    data_loss = sum((1 - y * s).relu() for y, s in zip(labels, scores, strict=True)) / len(points)
    reg = alpha * sum(p * p for p in model.parameters())
    accuracy = sum((s.data > 0) == (y > 0) for y, s in zip(labels, scores, strict=True)) / len(points)
    return data_loss + reg, accuracy


@dataclass
class MoonsRun:
    model: MLP
    points: list[tuple[float, float]]
    labels: list[int]
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)


def train_moons(n_samples: int = 100, noise: float = 0.1, hidden: Iterable[int] = (16, 16), steps: int = 100,
                lr: float = 1.0, alpha: float = 1e-4, seed: int = 0) -> MoonsRun:
    """Full-batch gradient descent on two moons with micrograd's demo settings; steps + 1 losses and accuracies.

    The learning rate decays linearly from lr to lr / 10 (micrograd's schedule: the hinge loss is flat once
    points clear the margin, so a large early step is safe and a small late one settles the boundary).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    points, labels = make_moons(n_samples, noise, seed)
    run = MoonsRun(MLP(2, [*hidden, 1], seed=seed), points, labels)
    for k in range(steps + 1):  # losses[k] is measured after k updates, so the last entry is the final model
        loss, acc = hinge_loss(run.model, points, labels, alpha)
        run.losses.append(loss.data)
        run.accuracies.append(acc)
        if k == steps:
            break
        run.model.zero_grad()
        loss.backward()
        step = lr * (1.0 - 0.9 * k / steps)
        for p in run.model.parameters():
            p.data -= step * p.grad
    return run


def mlp_scores(model: MLP, points: list[tuple[float, float]]) -> list[float]:
    """The model's scores for many points with plain floats (no graph): the decision boundary grid needs speed."""
    import numpy as np

    x = np.asarray(points, dtype=np.float64)  # (N, 2)
    for i, layer in enumerate(model.layers):
        w = np.array([[wi.data for wi in n.w] for n in layer.neurons])  # (out, in)
        b = np.array([n.b.data for n in layer.neurons])  # (out,)
        x = x @ w.T + b  # (N, out)
        if i < len(model.layers) - 1:
            x = np.maximum(x, 0.0)
    return x[:, 0].tolist()


def plot_moons(run: MoonsRun, path: str | Path, grid: int = 120) -> None:
    """Loss and accuracy per step on the left, the learned decision boundary over the points on the right."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax_loss.plot(run.losses, label="loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("hinge loss + L2")
    ax_acc = ax_loss.twinx()
    ax_acc.plot(run.accuracies, color="tab:orange", label="accuracy")
    ax_acc.set_ylabel("training accuracy")
    ax_acc.set_ylim(0, 1.02)
    ax_loss.set_title("training (scalar autograd)")
    ax_loss.grid(alpha=0.3)

    pts = np.asarray(run.points)  # (N, 2)
    xs = np.linspace(pts[:, 0].min() - 0.5, pts[:, 0].max() + 0.5, grid)
    ys = np.linspace(pts[:, 1].min() - 0.5, pts[:, 1].max() + 0.5, grid)
    gx, gy = np.meshgrid(xs, ys)  # (grid, grid) each
    scores = np.asarray(mlp_scores(run.model, np.stack([gx.ravel(), gy.ravel()], axis=1).tolist()))
    ax_map.contourf(gx, gy, (scores > 0).reshape(gx.shape), levels=1, cmap="coolwarm", alpha=0.35)
    ax_map.contour(gx, gy, scores.reshape(gx.shape), levels=[0.0], colors="k", linewidths=1)
    ax_map.scatter(pts[:, 0], pts[:, 1], c=run.labels, cmap="coolwarm", edgecolors="k", s=20)
    ax_map.set_title(f"decision boundary (accuracy {run.accuracies[-1]:.0%})")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
