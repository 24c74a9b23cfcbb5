"""Lab: micrograd. Fill in the Value class below, then run `llmlab labs check micrograd` (or the notebook).

A Value holds one number (`data`) and, after `backward()` on a result, the derivative of that result with
respect to it (`grad`). Each operation returns a new Value that remembers its inputs and how to pass a gradient
back to each of them: out = a * b passes out.grad * b.data to a and out.grad * a.data to b.
"""

import math  # noqa: F401


class Value:
    def __init__(self, data: float, _children: tuple = ()):
        """data: the number; grad starts at 0.0; _children: the Values this one was computed from."""
        raise NotImplementedError("TODO: store data, grad = 0.0, the children, and a _backward that does nothing")

    def __add__(self, other) -> "Value":
        """self + other (other may be a plain number: wrap it in a Value)."""
        raise NotImplementedError("TODO: the sum, and a _backward passing out.grad to both inputs")

    def __mul__(self, other) -> "Value":
        raise NotImplementedError("TODO: the product; each input's gradient is out.grad times the other's data")

    def __pow__(self, k: float) -> "Value":
        """self ** k for a plain number k."""
        raise NotImplementedError("TODO: d/dx x**k = k * x**(k - 1)")

    def tanh(self) -> "Value":
        raise NotImplementedError("TODO: d/dx tanh(x) = 1 - tanh(x)**2")

    def exp(self) -> "Value":
        raise NotImplementedError("TODO: d/dx exp(x) = exp(x)")

    def relu(self) -> "Value":
        raise NotImplementedError("TODO: max(x, 0); its slope is 1 where x > 0, else 0")

    def backward(self) -> None:
        """Set self.grad = 1 and fill every earlier Value's grad with d(self)/d(it): order the graph
        topologically (each node after everything it depends on), then run each node's _backward from the end."""
        raise NotImplementedError("TODO: a topological sort (depth-first), then the chain rule in reverse order")

    # the rest follow from the ones above
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

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"
