"""`llmlab labs ...` from the command line: the workspace, exit codes, and one-line errors."""

import subprocess
import sys

from llmlab.cli import main
from llmlab.labs import get_lab


def test_list_shows_the_path(capsys):
    assert main(["labs", "list"]) == 0
    out = capsys.readouterr().out
    assert "attention" in out and "AMD lab 06" in out and "min" in out


def test_start_check_solution_and_force(tmp_path, capsys):
    work = str(tmp_path / "work")
    assert main(["labs", "start", "attention", "--dir", work]) == 0
    assert (tmp_path / "work" / "attention.py").read_text() == get_lab("attention").skeleton()
    assert (tmp_path / "work" / "attention.ipynb").is_file()
    capsys.readouterr()

    assert main(["labs", "check", "attention", "--dir", work, "--only", "attention"]) == 2
    captured = capsys.readouterr()
    assert "✗ attention: returns (batch, heads, seq, head_dim)" in captured.out
    assert "not implemented yet" in captured.out and "cross_attention" not in captured.out
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1

    assert main(["labs", "start", "attention", "--dir", work, "--solution"]) == 0  # the skeleton was unchanged
    assert main(["labs", "check", "attention", "--dir", work, "--only", "MultiHeadAttention"]) == 0
    assert "4/4 checks pass" in capsys.readouterr().out

    (tmp_path / "work" / "attention.py").write_text("# my work\n")
    assert main(["labs", "start", "attention", "--dir", work]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "work" / "attention.py").read_text() == "# my work\n"
    assert main(["labs", "start", "attention", "--dir", work, "--force"]) == 0
    assert (tmp_path / "work" / "attention.py").read_text() == get_lab("attention").skeleton()

    assert main(["labs", "solution", "attention"]) == 0
    assert "def explicit_attention(" in capsys.readouterr().out


def test_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    for argv in (["labs", "check", "attention", "--dir", str(tmp_path)], ["labs", "start", "nope"],
                 ["labs", "check", "attention", "--dir", str(tmp_path), "--only", "nope"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("llmlab: error:") and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_failing_check_is_a_nonzero_exit_of_the_real_command(tmp_path):
    (tmp_path / "attention.py").write_text("def attention(q, k, v, causal=True):\n    return q / 0 + None\n")
    cmd = [sys.executable, "-m", "llmlab.cli", "labs", "check", "attention", "--dir", str(tmp_path), "--only",
           "attention"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "TypeError" in result.stdout and "(at attention.py:2)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
