"""Every lab's notebook runs headless (nbclient + ipykernel) with the reference solution in place.

The default run executes the attention notebook with its end experiment shortened to a few steps; the slow
run executes every notebook exactly as a learner gets it.
"""

import re
import time

import nbformat
import pytest
from nbclient import NotebookClient

from llmlab.labs import LABS, start


def _run(name: str, folder, shorten: bool) -> nbformat.NotebookNode:
    _, nb_path = start(name, folder, solution=True)
    nb = nbformat.read(nb_path, as_version=4)
    if shorten:
        for cell in nb.cells:
            cell.source = re.sub(r"steps=\d+", "steps=4", cell.source)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> str:
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def _assert_ran_well(nb: nbformat.NotebookNode, name: str) -> None:
    text = _outputs(nb)
    assert "✗" not in text and "checks pass: well done." in text, text
    if any("plot_runs(" in c.source for c in nb.cells):
        assert any("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", [])), \
            "the end experiment draws a plot"
    assert "DIFFERENT from llmlab" not in text
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_the_attention_notebook_runs_with_the_solution(tmp_path):
    nb = _run("attention", tmp_path, shorten=True)
    _assert_ran_well(nb, "attention")


@pytest.mark.slow
@pytest.mark.parametrize("name", [lab.name for lab in LABS])
def test_every_notebook_runs_as_written_in_under_two_minutes(name, tmp_path):
    start_time = time.perf_counter()
    _assert_ran_well(_run(name, tmp_path, shorten=False), name)
    assert time.perf_counter() - start_time < 120
