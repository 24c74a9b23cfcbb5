"""Lab: micrograd, planted bugs: a learner-style correct engine (Karpathy's micrograd shape) with one typical
mistake each, and the words the checks must answer them with. ALTERNATIVES must pass."""

from llmlab.labs.registry import Bug, planted

ENGINE = '''
import math


class Value:
    def __init__(self, data, _children=()):
        self.data = data
        self.grad = 0.0
        self._prev = set(_children)
        self._backward = lambda: None

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def _backward():
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def __pow__(self, k):
        out = Value(self.data ** k, (self,))

        def _backward():
            self.grad += k * self.data ** (k - 1) * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,))

        def _backward():
            self.grad += (1 - t ** 2) * out.grad
        out._backward = _backward
        return out

    def exp(self):
        out = Value(math.exp(self.data), (self,))

        def _backward():
            self.grad += out.data * out.grad
        out._backward = _backward
        return out

    def relu(self):
        out = Value(max(self.data, 0.0), (self,))

        def _backward():
            self.grad += (self.data > 0) * out.grad
        out._backward = _backward
        return out

    def backward(self):
        order, seen = [], set()

        def visit(v):
            if v not in seen:
                seen.add(v)
                for child in v._prev:
                    visit(child)
                order.append(v)
        visit(self)
        self.grad = 1.0
        for v in reversed(order):
            v._backward()

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other ** -1 if isinstance(other, Value) else self * (1.0 / other)

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return (-self) + other
'''

BUGS = [
    Bug("assigns-instead-of-adding", "Value", planted(
        ENGINE, "            self.grad += out.grad\n            other.grad += out.grad",
        "            self.grad = out.grad\n            other.grad = out.grad"), "must be added (+=)"),
    Bug("mul-own-value", "Value", planted(ENGINE, "self.grad += other.data * out.grad",
                                          "self.grad += self.data * out.grad"), "a gets out.grad * b.data"),
    Bug("mul-forgets-chain-rule", "Value", planted(ENGINE, "other.grad += self.data * out.grad",
                                                   "other.grad += self.data"), "multiply by it"),
    Bug("tanh-of-input", "Value", planted(ENGINE, "(1 - t ** 2) * out.grad", "(1 - self.data ** 2) * out.grad"),
        "tanh passes (1 - t ** 2)"),
    Bug("pow-derivative", "Value", planted(ENGINE, "k * self.data ** (k - 1) * out.grad",
                                           "k * self.data ** k * out.grad"), "k * x ** (k - 1)"),
    Bug("relu-always-passes", "Value", planted(ENGINE, "(self.data > 0) * out.grad", "out.grad"), "relu passes"),
    Bug("no-topological-order", "Value", planted(
        ENGINE, "        for v in reversed(order):\n            v._backward()",
        "        for v in order:\n            v._backward()"), "topological order"),
    Bug("numbers-not-wrapped", "Value", planted(
        ENGINE, "    def __add__(self, other):\n        other = other if isinstance(other, Value) else Value(other)\n",
        "    def __add__(self, other):\n"), "plain numbers must work"),
]

ALTERNATIVES = [  # the topological order from an explicit stack instead of recursion, as llmlab's engine does
    planted(ENGINE, '''        def visit(v):
            if v not in seen:
                seen.add(v)
                for child in v._prev:
                    visit(child)
                order.append(v)
        visit(self)''', '''        stack = [(self, False)]
        while stack:  # depth-first without recursion: deep graphs do not hit the recursion limit
            v, expanded = stack.pop()
            if expanded:
                order.append(v)
            elif v not in seen:
                seen.add(v)
                stack.append((v, True))
                stack.extend((c, False) for c in v._prev)'''),
]
