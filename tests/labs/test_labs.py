"""Every lab on the path: the skeleton is "not implemented yet" everywhere, the reference solution and the
other correct answers pass every check, and each planted bug fails with the words that point at it."""

import nbformat
import pytest

from llmlab.labs import LABS, check, get_lab, notebook_json

BUGS = [(lab.name, bug) for lab in LABS for bug in lab.bugs()]


def _write(tmp_path, name: str, source: str):
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("name", [lab.name for lab in LABS])
def test_the_skeleton_is_not_implemented_yet_everywhere(name, tmp_path):
    lab = get_lab(name)
    report = check(name, _write(tmp_path, name, lab.skeleton()))
    assert len(report.results) == len(lab.checks()) > 0
    assert [r.status for r in report.results] == ["todo"] * len(report.results), report.text()
    assert not report.passed
    assert all("not implemented yet" in line for line in report.text().splitlines()[1:-1])


@pytest.mark.parametrize("name", [lab.name for lab in LABS])
def test_the_reference_solution_passes_every_check(name, tmp_path):
    report = check(name, _write(tmp_path, name, get_lab(name).solution()))
    assert report.passed, report.text()
    assert report.text().count("✓") == len(report.results)


@pytest.mark.parametrize("name", [lab.name for lab in LABS])
def test_other_correct_answers_pass(name, tmp_path):
    for source in get_lab(name).alternatives():
        items = {r.item for r in check(name, _write(tmp_path, name, source)).results if r.status != "todo"}
        for item in items:
            report = check(name, tmp_path, only=item)
            assert report.passed, report.text()


@pytest.mark.parametrize("name, bug", BUGS, ids=[f"{n}-{b.name}" for n, b in BUGS])
def test_a_planted_bug_fails_with_a_message_that_points_at_it(name, bug, tmp_path):
    report = check(name, _write(tmp_path, name, bug.source), only=bug.item)
    assert not report.passed
    failing = [r.message for r in report.results if r.status == "fail"]
    assert any(bug.expect in m for m in failing), f"{bug.name}: expected {bug.expect!r}\n{report.text()}"
    assert "Traceback" not in report.text()


@pytest.mark.parametrize("name", [lab.name for lab in LABS])
def test_every_lab_has_three_bugs_per_item_and_a_valid_notebook(name):
    lab = get_lab(name)
    per_item = {item: sum(b.item == item for b in lab.bugs()) for item in lab.checks().items()}
    assert sum(per_item.values()) >= 3 and min(per_item.values()) >= 1, per_item
    nb = nbformat.reads(notebook_json(lab.cells()), as_version=4)
    nbformat.validate(nb)
    sources = [c.source for c in nb.cells]
    assert any("%autoreload 2" in s and f'import_module("{name}")' in s for s in sources)
    assert any(s.startswith(f'check("{name}"') for s in sources)
    assert lab.minutes > 0 and lab.teaches and lab.mirrors


def test_solution_shows_llmlabs_own_code():
    text = get_lab("attention").solution_with_sources()
    assert "from llmlab.models.layers import" in text
    assert "llmlab's own code: llmlab.models.layers.explicit_attention" in text
    assert "def explicit_attention(" in text
