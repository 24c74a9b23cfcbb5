"""The check runner: whatever the learner's file does, the answer is one line per check, never a traceback."""

import pytest

from llmlab.common.errors import UserError
from llmlab.labs import check, checking, get_lab, start


def _lab_file(tmp_path, source: str):
    (tmp_path / "attention.py").write_text(source, encoding="utf-8")
    return tmp_path


def test_a_syntax_error_fails_every_check_with_its_line(tmp_path):
    report = check("attention", _lab_file(tmp_path, "import torch\n\ndef attention(q, k, v, causal=True)\n"))
    assert not report.passed and {r.status for r in report.results} == {"fail"}
    assert "attention.py does not load: SyntaxError" in report.results[0].message
    assert "(at attention.py:3)" in report.results[0].message


def test_an_exception_in_learner_code_is_one_line_with_file_and_line(tmp_path):
    source = "def attention(q, k, v, causal=True):\n    x = 1\n    return {}['missing']\n"
    report = check("attention", _lab_file(tmp_path, source), only="attention")
    assert report.results[0].message == "KeyError: 'missing' (at attention.py:3)"
    assert "Traceback" not in report.text()


def test_a_missing_name_and_a_wrong_signature(tmp_path):
    report = check("attention", _lab_file(tmp_path, "def attention(q, k, v):\n    return q\n"))
    by_item = {r.item: r for r in report.results}
    assert by_item["cross_attention"].status == "todo"  # not defined yet
    assert "keep the signature" in by_item["attention"].message


def test_none_returned_says_return(tmp_path):
    report = check("attention", _lab_file(tmp_path, "def attention(q, k, v, causal=True):\n    q @ k.mT\n"),
                   only="attention")
    assert "did you forget `return`?" in report.results[0].message


def test_an_endless_loop_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(checking, "CHECK_SECONDS", 0.5)
    report = check("attention", _lab_file(tmp_path, "def attention(q, k, v, causal=True):\n    while True:\n"
                                          "        pass\n"), only="attention")
    assert "still running after" in report.results[0].message


def test_every_edit_is_seen_even_within_one_second(tmp_path):
    lab = get_lab("attention")
    assert not check("attention", _lab_file(tmp_path, lab.skeleton()), only="attention").passed
    assert check("attention", _lab_file(tmp_path, lab.solution()), only="attention").passed


def test_start_never_overwrites_an_edited_file_without_force(tmp_path):
    py, nb = start("attention", tmp_path)
    assert py.read_text() == get_lab("attention").skeleton() and nb.exists()
    start("attention", tmp_path, solution=True)  # unchanged files may be replaced
    assert py.read_text() == get_lab("attention").solution()
    py.write_text(py.read_text() + "# mine\n")
    with pytest.raises(UserError, match="you have changed it"):
        start("attention", tmp_path)
    assert py.read_text().endswith("# mine\n")
    start("attention", tmp_path, force=True)
    assert py.read_text() == get_lab("attention").skeleton()


@pytest.mark.parametrize("call, message", [
    (lambda d: check("no-such-lab", d), "unknown; the labs are"),
    (lambda d: check("attention", d), "no such file; run `llmlab labs start attention"),
    (lambda d: check("attention", d, only="softmax"), "no item 'softmax'"),
])
def test_user_mistakes(call, message, tmp_path):
    with pytest.raises(UserError, match=message):
        call(tmp_path)


def test_check_defaults_to_the_current_folder_and_shows_as_lines(tmp_path, monkeypatch):
    start("attention", tmp_path, solution=True)
    monkeypatch.chdir(tmp_path)
    report = check("attention", only="cross_attention")
    assert report.passed
    assert repr(report).splitlines()[1].startswith("✓ cross_attention:")  # what a notebook cell shows


def test_a_notebook_cell_must_be_markdown_or_code():
    from llmlab.labs import notebook_json

    with pytest.raises(ValueError, match="cell 1: kind 'raw'"):
        notebook_json([("markdown", "# hi"), ("raw", "x")])


def test_a_swallowing_except_or_exit_cannot_escape_the_checks(tmp_path, monkeypatch):
    monkeypatch.setattr(checking, "CHECK_SECONDS", 0.3)
    source = ("def attention(q, k, v, causal=True):\n    try:\n        while True:\n            pass\n"
              "    except Exception:\n        return q\n")
    report = check("attention", _lab_file(tmp_path, source), only="attention")
    assert "still running after" in report.results[0].message
    report = check("attention", _lab_file(tmp_path, "import sys\nsys.exit(3)\n"), only="attention")
    assert report.results[0].message.startswith("attention.py does not load: SystemExit: 3")
