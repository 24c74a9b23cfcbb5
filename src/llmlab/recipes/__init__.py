"""Recipes: one argument dataclass and `run(args)` per command, the same for the CLI and for Python.

Recipes wire components and never import each other; shared argument groups live in `shared.py`.
"""
