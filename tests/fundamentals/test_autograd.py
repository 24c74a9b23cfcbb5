"""The scalar engine against torch.autograd: random expression graphs over every op, a small MLP's parameter
gradients, accumulation, deep graphs, and the documented errors for out-of-domain input."""

import math
import random

import pytest
import torch

from llmlab.fundamentals.autograd import MLP, Value, hinge_loss, make_moons, mlp_scores, plot_moons, train_moons

OPS = ("add", "sub", "mul", "div", "pow_int", "pow_frac", "pow_neg", "exp", "log", "tanh", "relu", "neg",
       "radd", "rsub", "rmul", "rdiv")


def apply(op: str, a, b, c: float, lib):
    """One op on Values (lib=None) or torch tensors (lib=torch); inputs of log, fractional and negative
    powers and divisors are first made positive the same way on both sides."""
    tanh = (lambda x: x.tanh())
    exp = (lambda x: x.exp())
    positive = a * a + 0.5  # > 0, so log, x ** 0.5 and 1 / x are defined
    return {
        "add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / (b * b + 0.5),
        "pow_int": lambda: a**3, "pow_frac": lambda: positive**1.5, "pow_neg": lambda: positive**-2,
        "exp": lambda: exp(tanh(a)), "log": lambda: positive.log(), "tanh": lambda: tanh(a),
        "relu": lambda: a.relu(), "neg": lambda: -a, "radd": lambda: c + a, "rsub": lambda: c - a,
        "rmul": lambda: c * a, "rdiv": lambda: c / positive,
    }[op]()


def random_graph(seed: int, n_leaves: int = 4, n_ops: int = 30):
    """The same random expression built twice, on Values and on float64 torch scalars; returns both leaf lists,
    both outputs and the ops used. Large intermediate values are squashed with tanh to keep the graph finite."""
    rng = random.Random(seed)
    leaves_v = [Value(rng.uniform(-2, 2)) for _ in range(n_leaves)]
    leaves_t = [torch.tensor(v.data, dtype=torch.float64, requires_grad=True) for v in leaves_v]
    nodes_v, nodes_t, used = list(leaves_v), list(leaves_t), set()
    for _ in range(n_ops):
        op = rng.choice(OPS)
        i, j = rng.randrange(len(nodes_v)), rng.randrange(len(nodes_v))  # i == j reuses a node twice
        c = rng.uniform(-3, 3)
        v = apply(op, nodes_v[i], nodes_v[j], c, None)
        t = apply(op, nodes_t[i], nodes_t[j], c, torch)
        if abs(v.data) > 5:
            v, t = v.tanh(), t.tanh()
        nodes_v.append(v)
        nodes_t.append(t)
        used.add(op)
    picks = [rng.randrange(n_leaves, len(nodes_v)) for _ in range(3)]  # several outputs: many paths to each leaf
    out_v = sum((nodes_v[k] for k in picks), Value(0.0))
    out_t = sum(nodes_t[k] for k in picks)
    return leaves_v, leaves_t, out_v, out_t, used


@pytest.mark.parametrize("seed", range(25))
def test_random_graphs_match_torch(seed):
    leaves_v, leaves_t, out_v, out_t, _ = random_graph(seed)
    out_v.backward()
    out_t.backward()
    assert out_v.data == pytest.approx(out_t.item(), rel=1e-12, abs=1e-12)
    for v, t in zip(leaves_v, leaves_t, strict=True):
        expected = 0.0 if t.grad is None else t.grad.item()
        assert v.grad == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_random_graphs_cover_every_op():
    used = set().union(*(random_graph(seed)[4] for seed in range(25)))
    assert used == set(OPS)


def test_worked_example_and_shared_node():
    a, b = Value(2.0), Value(-3.0)
    c = a * b + a**2
    c.backward()
    assert (c.data, a.grad, b.grad) == (-2.0, 1.0, 2.0)  # dc/da = b + 2a, dc/db = a
    x = Value(3.0)
    y = x * x  # one node used twice by the same op
    y.backward()
    assert x.grad == 6.0


def test_leaf_grads_accumulate_like_torch():
    a = Value(0.7)
    out = (a * a).tanh() + a.exp()
    out.backward()
    out.backward()
    t = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    out_t = (t * t).tanh() + t.exp()
    out_t.backward(retain_graph=True)
    out_t.backward()
    assert a.grad == pytest.approx(t.grad.item(), rel=1e-12)


def test_deep_graph_has_no_recursion_limit():
    x = Value(0.5)
    y = x
    for _ in range(20_000):  # deeper than Python's default recursion limit of 1000
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001**20_000, rel=1e-9)


def torch_hinge_grads(model: MLP, points, labels, alpha: float) -> list[float]:
    """The engine's hinge loss rebuilt with torch matrices; its gradients in `model.parameters()` order."""
    weights = [(torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64, requires_grad=True),
                torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64, requires_grad=True))
               for layer in model.layers]
    x = torch.tensor(points, dtype=torch.float64)
    for i, (w, b) in enumerate(weights):
        x = x @ w.T + b
        if i < len(weights) - 1:
            x = torch.relu(x)
    y = torch.tensor(labels, dtype=torch.float64)
    loss = torch.relu(1 - y * x[:, 0]).mean() + alpha * sum((w**2).sum() + (b**2).sum() for w, b in weights)
    loss.backward()
    return [g for w, b in weights for row, gb in zip(w.grad, b.grad, strict=True) for g in (*row.tolist(), gb.item())]


@pytest.mark.parametrize("hidden", [[4], [5, 3]])
def test_mlp_parameter_grads_match_torch(hidden):
    points, labels = make_moons(12, noise=0.2, seed=3)
    model = MLP(2, [*hidden, 1], seed=1)
    loss, _ = hinge_loss(model, points, labels, alpha=0.01)
    model.zero_grad()
    loss.backward()
    expected = torch_hinge_grads(model, points, labels, alpha=0.01)
    assert [p.grad for p in model.parameters()] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert any(abs(g) > 1e-3 for g in expected)  # a real signal, not all zeros


def test_mlp_scores_equal_value_forward():
    points, _ = make_moons(10, seed=0)
    model = MLP(2, [6, 6, 1], seed=2)
    assert mlp_scores(model, points) == pytest.approx([model(list(p))[0].data for p in points], rel=1e-12)


def test_make_moons_is_seeded_and_balanced():
    a, b = make_moons(51, noise=0.1, seed=4), make_moons(51, noise=0.1, seed=4)
    assert a == b
    assert make_moons(51, seed=5) != a
    assert a[1].count(-1) == 25 and a[1].count(1) == 26
    clean, _ = make_moons(20, noise=0.0, seed=0)
    on_circle = [abs(math.hypot(x, y) - 1) < 1e-9 or abs(math.hypot(x - 1, y - 0.5) - 1) < 1e-9 for x, y in clean]
    assert all(on_circle)  # sklearn's geometry: unit circles centred at (0, 0) and (1, 0.5)


def test_training_learns_the_moons(tmp_path):
    run = train_moons(n_samples=40, noise=0.1, hidden=[8, 8], steps=30, seed=0)
    assert len(run.losses) == 31
    assert run.losses[-1] < 0.5 * run.losses[0]
    assert run.accuracies[-1] >= 0.8
    plot_moons(run, tmp_path / "moons.png", grid=30)
    assert (tmp_path / "moons.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_out_of_domain_input_raises():
    with pytest.raises(ValueError, match="positive"):
        Value(0.0).log()
    with pytest.raises(ValueError, match="positive"):
        Value(-1.0).log()
    with pytest.raises(ValueError, match="non-integer power"):
        Value(-2.0) ** 0.5
    with pytest.raises(ZeroDivisionError):
        Value(0.0) ** -1
    with pytest.raises(ZeroDivisionError):
        1 / Value(0.0)
    with pytest.raises(OverflowError):
        Value(1000.0).exp()
    with pytest.raises(TypeError, match="number exponent"):
        Value(2.0) ** Value(3.0)
    with pytest.raises(TypeError):
        Value("1.0")
    with pytest.raises(ValueError):
        MLP(2, [])
    assert (Value(-8.0) ** 3).data == -512.0  # an integer power of a negative number is fine


def test_power_derivative_at_zero_matches_torch():
    for k in (0.5, 1, 2, 0):
        v = Value(0.0)
        (v**k).backward()
        t = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
        (t**k).backward()
        assert v.grad == t.grad.item()
