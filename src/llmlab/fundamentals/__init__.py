"""The from-scratch basics: a scalar autograd engine, manual backpropagation through one block, n-gram models.

Each module rebuilds by hand something the rest of llmlab takes from PyTorch or learns with it, and is tested
against the real thing. Nothing here imports `llmlab.models` (same rank); the recipes put them side by side.
"""
