"""The pieces every lab's notebook is written with: markdown and code cells, the set-up cell, a check cell.

A notebook is a list of (kind, source) pairs; `workspace.notebook_json` turns it into an .ipynb file.
"""

from textwrap import dedent


def md(text: str) -> tuple[str, str]:
    return ("markdown", dedent(text).strip("\n"))


def code(text: str) -> tuple[str, str]:
    return ("code", dedent(text).strip("\n"))


def setup(name: str) -> tuple[str, str]:
    """Import the learner's NAME.py as `lab`, reloaded before every cell so a saved edit is used at once."""
    return code(f'''
        %load_ext autoreload
        %autoreload 2
        import importlib

        import torch
        from llmlab.labs import check

        lab = importlib.import_module("{name}")  # your {name}.py, next to this notebook
        ''')


def check_cell(name: str, item: str | None = None) -> tuple[str, str]:
    """Run the checks of one item (all of them without `item`); the ✓/✗ lines are the cell's output."""
    return code(f'check("{name}", only="{item}")' if item else f'check("{name}")')
