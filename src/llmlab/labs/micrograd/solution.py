"""Lab: micrograd, the reference solution: llmlab's own scalar autograd engine (llmlab.fundamentals.autograd),
which stores each op's local derivatives at forward time instead of a closure (see its docstring for why)."""

from llmlab.fundamentals.autograd import Value, topological_order

__all__ = ["Value"]

LLMLAB_CODE = [Value, topological_order]  # printed by `llmlab labs solution micrograd`
