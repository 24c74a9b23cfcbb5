"""The layers: every import in the package points down (or stays inside its own package), never up or across.

Bottom to top (one rank per line in docs/architecture.md); packages on the same rank do not import each
other. Imports inside functions count too: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "llmlab"
LAYERS = [("common",), ("tokenizer",), ("data",), ("models", "fundamentals"), ("infer",), ("eval",), ("train",),
          ("quantize",), ("finetune",), ("align",), ("rag", "multimodal"), ("loading",), ("serve",), ("labs",),
          ("recipes",), ("cli", "__init__"), ("__main__",)]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def unit_of(path: Path) -> str:
    """The top-level package or module a file belongs to: src/llmlab/train/loop.py -> "train"."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_units(path: Path) -> list[tuple[int, str]]:
    """(line, unit) for every llmlab import in the file; bare `import llmlab` means `llmlab.load`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "llmlab" else [f"llmlab.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "llmlab":
                out.append((node.lineno, parts[1] if len(parts) > 1 else "loading"))
    return out


def test_every_package_has_a_layer():
    units = {unit_of(p) for p in PACKAGE.rglob("*.py")}
    assert units - set(RANK) == set(), "a new top-level package needs a place in LAYERS and docs/architecture.md"


def test_imports_point_down():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = unit_of(path)
        for line, there in imported_units(path):
            if there == here:
                continue
            if there not in RANK:
                bad.append(f"{path.relative_to(PACKAGE)}:{line}: imports unknown llmlab.{there}")
            elif RANK[there] >= RANK[here]:
                direction = "across" if RANK[there] == RANK[here] else "up"
                bad.append(f"{path.relative_to(PACKAGE)}:{line}: {here} imports {direction} to {there}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("from llmlab.train.loop import x", [(1, "train")]),
    ("def f():\n    from llmlab.finetune import lora", [(2, "finetune")]),
    ("import llmlab", [(1, "loading")]),
    ("from llmlab import loading", [(1, "loading")]),
    ("import os", []),
])
def test_the_checker_sees_every_import_form(tmp_path, source, expected):
    file = tmp_path / "m.py"
    file.write_text(source)
    assert imported_units(file) == expected


def test_the_checker_catches_an_upward_import(tmp_path):
    pkg = tmp_path / "llmlab"
    (pkg / "models").mkdir(parents=True)
    (pkg / "models" / "bad.py").write_text("def f():\n    from llmlab.train.loop import train_loop\n")
    saved, globals()["PACKAGE"] = PACKAGE, pkg
    try:
        with pytest.raises(AssertionError, match="models/bad.py:2: models imports up to train"):
            test_imports_point_down()
    finally:
        globals()["PACKAGE"] = saved
