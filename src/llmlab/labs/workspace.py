"""The learner's folder: writing NAME.py and NAME.ipynb, and checking NAME.py.

`start` never overwrites a file the learner has changed: a file is "edited" when it is neither the
skeleton nor the solution as llmlab would write them now; `force=True` overwrites it anyway. Notebooks are
built from a lab's cell list with the json module (nbformat v4.5: a list of cells with ids, a kernelspec),
so a lab keeps no binary or generated files. `check` is what `llmlab labs check` and a notebook call.
"""

import json
from pathlib import Path

from llmlab.common.errors import UserError
from llmlab.common.io import write_text_atomic
from llmlab.labs.checking import Report, run_checks
from llmlab.labs.registry import get_lab


def notebook_json(cells: list[tuple[str, str]]) -> str:
    """[("markdown" | "code", source), ...] -> the text of an .ipynb file."""
    out = []
    for i, (kind, source) in enumerate(cells):
        if kind not in ("markdown", "code"):
            raise ValueError(f"cell {i}: kind {kind!r} must be 'markdown' or 'code'")
        cell = {"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": source.strip("\n")}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    notebook = {"cells": out, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                             "language_info": {"name": "python"}}}
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def start(name: str, folder: str | Path = ".", solution: bool = False, force: bool = False) -> list[Path]:
    """Write folder/NAME.py (the skeleton, or the solution) and folder/NAME.ipynb; returns both paths."""
    lab = get_lab(name)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: is a file, not a folder; choose another --dir")
    code = lab.solution() if solution else lab.skeleton()
    notebook = notebook_json(lab.cells())
    files = {folder / f"{name}.py": (code, {lab.skeleton(), lab.solution()}),
             folder / f"{name}.ipynb": (notebook, {notebook})}
    if not force:
        edited = [p for p, (_, pristine) in files.items() if p.exists() and p.read_text(encoding="utf-8")
                  not in pristine]
        if edited:
            raise UserError(f"{edited[0]}: you have changed it, and starting again would overwrite it; "
                            "pass --force to replace it, or choose another --dir")
    folder.mkdir(parents=True, exist_ok=True)
    for path, (text, _) in files.items():
        write_text_atomic(path, text)
    return list(files)


def check(name: str, folder: str | Path = ".", only: str | None = None) -> Report:
    """Run lab NAME's checks (those of item `only`) against folder/NAME.py. Shows as ✓/✗ lines in a notebook;
    `.passed` is True when every selected check passes."""
    lab = get_lab(name)
    return run_checks(name, lab.checks(), Path(folder) / f"{name}.py", only)
