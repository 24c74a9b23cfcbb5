"""Multiple-choice questions about the Python standard library, read from the running interpreter.

Two kinds, alternating, each with four choices and one right answer (`answer` is its index):

    "Which standard library module provides `bisect_left`?"  choices ["json", "bisect", "shutil", "random"], answer 1
    "Which of these is provided by the `math` module?"       choices ["dedent", "isqrt", "rmtree", "chain"], answer 1

A name counts as provided by a module when it is public (in `__all__` when the module has one),
callable, not a submodule and not a builtin; names that two of the modules share are never asked,
and distractors are modules (or names) without it, so each question has exactly one right choice.
Deterministic by seed on a given Python version; another version's standard library differs a
little (functions come and go), and so do the rows.
"""

import builtins
import importlib
import random
import types

MODULES = ("os", "json", "math", "re", "itertools", "functools", "collections", "string", "random", "statistics",
           "textwrap", "shutil", "pathlib", "heapq", "bisect", "copy", "glob", "fnmatch", "base64", "difflib",
           "calendar", "shlex", "tempfile", "operator")


def public_callables(module_name: str) -> set[str]:
    """Public callable names a module provides: "heapq" -> {"heappush", "heappop", "merge", "nlargest", ...}."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    return {n for n in names if not n.startswith("_") and hasattr(module, n) and callable(getattr(module, n))
            and not isinstance(getattr(module, n), types.ModuleType) and not hasattr(builtins, n)}


def _provided() -> dict[str, set[str]]:
    """Each module's names, without the names that more than one module provides."""
    names = {m: public_callables(m) for m in MODULES}
    seen: dict[str, int] = {}
    for provided in names.values():
        for n in provided:
            seen[n] = seen.get(n, 0) + 1
    return {m: {n for n in provided if seen[n] == 1} for m, provided in names.items() if provided}


def stdlib_multiple_choice(n: int, seed: int = 0) -> list[dict]:
    """n questions: {"question", "choices" (4 strings), "answer" (index of the right choice), "kind"}."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    provided = _provided()
    modules = sorted(provided)
    pairs = sorted((name, m) for m in modules for name in provided[m])
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        module = rng.choice(modules)  # the module first: os alone provides a third of the names
        if i % 2 == 0:
            name, right = rng.choice(sorted(provided[module])), module
            wrong = rng.sample([m for m in modules if m != right], 3)
            question, kind = f"Which standard library module provides `{name}`?", "module_of_name"
        else:
            right = rng.choice(sorted(provided[module]))
            wrong = rng.sample([name for name, m in pairs if m != module], 3)
            question, kind = f"Which of these is provided by the `{module}` module?", "name_in_module"
        choices = wrong + [right]
        rng.shuffle(choices)
        rows.append({"question": question, "choices": choices, "answer": choices.index(right), "kind": kind})
    return rows
