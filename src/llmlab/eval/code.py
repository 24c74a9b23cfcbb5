"""Running generated code to score it: `check` (human-eval's contract), `pass_at_k`, HumanEval programs.

`check(program, test)` writes program + test into a fresh temporary folder, runs them in a separate
process tree and answers {"passed": bool, "result": "passed" | "failed: <reason>" | "timed out"}, as
human-eval's `check_correctness` does. The evaluator never runs the code itself, so a crash, a hang
or a hostile program costs one failed sample, never the run. The tree, from the evaluator down:

    evaluator -> supervisor (new session: this file run as a script, stdlib only, so no torch import)
                   -> init (PID 1 of a new PID namespace, when the kernel allows one; reaps orphans)
                        -> program (limits, unprivileged user, no network): exec(program + test)

What it does:
- one process group per sample, SIGKILLed whole when the supervisor ends, at the wall-clock deadline
  (`timeout` after the program starts) or when the supervisor dies. With a PID namespace the kernel
  also kills every process left in it when init exits, even one that called setsid();
- the program's parent is init or the supervisor, never the evaluator: `os.kill(os.getppid(), 9)`
  is refused (under root the program is nobody), ignored (a namespace's init) or ends the sample;
- limits: CPU seconds (RLIMIT_CPU, soft then hard), address space (RLIMIT_AS: a 10 GB allocation is a
  MemoryError), file size (RLIMIT_FSIZE: writing more is an OSError), no core files, processes (RLIMIT_NPROC);
- RLIMIT_NPROC counts every process and thread of the *user*, not of the sandbox, and root is exempt.
  So the limit is "the user's tasks now + max_procs", and under root the program first becomes the
  unprivileged user nobody (uid 65534): then the limit applies (a fork bomb stops at EAGAIN), and the
  program can neither write root's files nor signal root's processes. Consequence: sandboxes running
  in parallel share nobody's count, and any other process of nobody's counts against it;
- network: a new network namespace (a loopback that is down) when allowed, as root or through an
  unprivileged user namespace; otherwise `socket.socket` is replaced by a function that raises,
  which stops honest code only. `isolation()` says which of these this machine gives;
- environment: PATH, HOME, LANG, TMPDIR only, so no token or key of the evaluator leaks in;
- stdin, stdout and stderr are /dev/null: a program printing forever only spends its time.

What it does not protect against:
- reading: the program reads what its user can. Under root, when the interpreter lives where nobody
  cannot read (e.g. under /root), the program keeps CAP_DAC_READ_SEARCH so that it can import the
  standard library and installed packages, and can then read every file on the machine;
- writing: world-writable places (/tmp, /dev/shm) stay writable; without root, everything the user
  can write is writable (no mount namespace, no read-only root);
- without a PID namespace, a process that calls setsid() leaves the group and outlives the sample;
- a program written against this harness can forge a pass: it runs in the interpreter of the
  wrapper that reports the verdict;
- memory is limited per process (a fork bomb may use max_procs * memory_mb), there is no cgroup;
- outside Linux (macOS) only the session, the limits the OS accepts and the socket stub apply;
- kernel exploits and side channels. This keeps a buggy or mischievous model from breaking an
  evaluation; it is not a boundary for hostile code: use a VM, gVisor or nsjail for that.
"""

import ctypes
import json
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

LINUX = sys.platform.startswith("linux")
NOBODY = 65534
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 8, 38, 47
PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH, CAPABILITY_VERSION_3 = 2, 2, 0x20080522
STARTUP_GRACE = 10.0  # seconds allowed for the interpreter to start before the program's own timeout
MAX_REPORT = 1 << 16  # bytes of the report pipe kept; a program flooding it is drained and ignored


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, the Codex paper): 1 - C(n-c, k) / C(n, k).

    The chance that at least one of k samples, drawn without replacement from n of
    which c are correct, passes; as a product, which stays exact where the binomials
    overflow. n=10, c=3, k=2 -> 1 - C(7,2)/C(10,2) = 1 - 21/45 = 0.5333; n=5, c=1, k=1 -> 0.2.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_scores(counts: list[tuple[int, int]], ks: tuple[int, ...] = (1, 10, 100)) -> dict[str, float]:
    """Mean pass@k over problems from (samples n, correct c) per problem; a k above some n is left out.

    [(2, 1), (2, 0)], ks=(1, 2, 10) -> {"pass@1": 0.25, "pass@2": 0.5} (human-eval's rule for large k).
    """
    if not counts:
        raise ValueError("counts is empty: no problem was checked")
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
            for k in ks if all(n >= k for n, _ in counts)}


def humaneval_program(row: dict, completion: str) -> tuple[str, str]:
    """(program, test) of a HumanEval-shaped row and a completion, assembled as human-eval does."""
    return row["prompt"] + completion, f"{row['test']}\ncheck({row['entry_point']})\n"


def check(program: str, test: str, timeout: float = 5.0, memory_mb: int = 2048, max_procs: int = 32,
          file_mb: int = 16) -> dict:
    """Run program + test in the sandbox: {"passed": bool, "result": "passed" | "failed: ..." | "timed out"}.

    `timeout` is wall seconds from the program's start (the CPU limit is its ceiling + 1);
    `memory_mb` the address space, `max_procs` the extra processes and `file_mb` the largest file.
    """
    if timeout <= 0 or memory_mb <= 0 or max_procs < 1 or file_mb <= 0:
        raise ValueError(f"need timeout > 0, memory_mb > 0, max_procs >= 1 and file_mb > 0, got {timeout}, "
                         f"{memory_mb}, {max_procs}, {file_mb}")
    return _check(program + "\n" + test + "\n", timeout, memory_mb, max_procs, file_mb, namespaces=True)


def check_all(jobs: list[tuple[str, str]], timeout: float = 5.0, workers: int = 2, **limits) -> list[dict]:
    """`check` over (program, test) pairs, `workers` sandboxes at a time; results in the order of jobs."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: check(job[0], job[1], timeout, **limits), jobs))


def isolation() -> list[str]:
    """What the sandbox gets on this machine, e.g. ["pid namespace", "network namespace", "user nobody", ...]."""
    if _ISOLATION is None:
        check("", "")
    return list(_ISOLATION or [])


_ISOLATION: list[str] | None = None


def _check(source: str, timeout: float, memory_mb: int, max_procs: int, file_mb: int, namespaces: bool) -> dict:
    workdir = tempfile.mkdtemp(prefix="llmlab-sandbox-")
    read_fd, write_fd = os.pipe()
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(source)
        if os.geteuid() == 0:  # the program runs as nobody and works in this folder
            os.chown(workdir, NOBODY, NOBODY)
        config = {"fd": write_fd, "cpu": math.ceil(timeout) + 1, "memory": memory_mb << 20, "procs": max_procs,
                  "file": file_mb << 20, "namespaces": namespaces}
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "TMPDIR": workdir}
        proc = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), json.dumps(config)], cwd=workdir,
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        write_fd = -1
        report, timed_out = _watch(proc, read_fd, timeout)
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        _remove_tree(workdir)
    return _verdict(report, proc.returncode, timed_out)


def _watch(proc: subprocess.Popen, read_fd: int, timeout: float) -> tuple[list[str], bool]:
    """Read the report pipe until the supervisor ends or time runs out, then kill the whole group."""
    os.set_blocking(read_fd, False)
    data, started, deadline = bytearray(), False, time.monotonic() + timeout + STARTUP_GRACE
    timed_out = False
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:  # not reaped: pgid stays
        if time.monotonic() > deadline:
            timed_out = True
            break
        select.select([read_fd], [], [], 0.01)
        data += _drain(read_fd, MAX_REPORT - len(data))
        if not started and b"start\n" in data:
            started, deadline = True, time.monotonic() + timeout
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    data += _drain(read_fd, MAX_REPORT - len(data))
    return data.decode("utf-8", errors="replace").splitlines(), timed_out


def _drain(fd: int, room: int) -> bytes:
    """Everything readable now from a non-blocking fd; keeps at most `room` bytes, discards the rest."""
    kept = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return kept
        if not chunk:
            return kept
        kept += chunk[:max(room - len(kept), 0)]


def _verdict(report: list[str], returncode: int, timed_out: bool) -> dict:
    global _ISOLATION
    started = "start" in report
    for line in report:
        if line.startswith("isolation:"):
            _ISOLATION = [part for part in line.removeprefix("isolation:").split(",") if part]
    verdict = next((line for line in report[report.index("start"):] if line == "passed" or
                    line.startswith("failed:")), None) if started else None
    if verdict is None:
        verdict = next((line for line in report if line.startswith("failed:")), None)  # setup failed
    code = 128 - returncode if returncode < 0 else returncode  # the supervisor passes on 128 + signal
    if timed_out or code == 128 + signal.SIGXCPU:
        result = "timed out"
    elif verdict == "passed":
        result = "passed" if code == 0 else f"failed: the sandbox ended with code {code} after the tests passed"
    elif verdict is not None:
        result = verdict
    elif code > 128 and code - 128 in signal.valid_signals():
        result = f"failed: killed by {signal.Signals(code - 128).name}"
    else:
        result = f"failed: exited with code {code} before the tests finished"
    return {"passed": result == "passed", "result": result}


def _remove_tree(path: str) -> None:
    """Delete the sample's folder, even where the program took away its own write permissions."""
    def retry(func, target, _):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            func(target)
        except OSError:
            pass  # left behind in the temporary folder; the evaluation goes on

    shutil.rmtree(path, **{"onexc" if sys.version_info >= (3, 12) else "onerror": retry})


# Everything below runs in the sandbox (`python -I code.py CONFIG`), never in the evaluator.

def _supervise(config: dict) -> None:
    """The supervisor: enter namespaces, fork init or the program, exit with its code (128 + signal)."""
    fd = config["fd"]
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the evaluator died: so does the tree
        applied = _enter_namespaces() if config["namespaces"] and LINUX else []
        pid = os.fork()
        if pid == 0:
            _init(config, applied) if "pid namespace" in applied else _program(config, applied)
    except BaseException as e:
        _report(fd, f"failed: sandbox setup: {_describe(e)}")
        os._exit(1)
    os.close(fd)
    os._exit(_wait_code(pid))


def _init(config: dict, applied: list[str]) -> None:
    """PID 1 of the namespace: fork the program, reap orphans, exit with the program's code.

    When init exits, the kernel kills every process left in the namespace.
    """
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    pid = os.fork()
    if pid == 0:
        _program(config, applied)
    while True:
        done, status = os.wait()
        if done == pid:
            os._exit(_exit_code(status))


def _program(config: dict, applied: list[str]) -> None:
    fd = config["fd"]
    try:
        applied = applied + _confine(config, "user namespace" in applied)
        if "network namespace" not in applied:
            _block_sockets()
            applied.append("sockets disabled")
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        _report(fd, "isolation:" + ",".join(applied))
        with open("program.py", encoding="utf-8") as f:
            source = f.read()
    except BaseException as e:
        _report(fd, f"failed: sandbox setup: {_describe(e)}")
        os._exit(1)
    _report(fd, "start")
    try:
        exec(compile(source, "program.py", "exec"), {"__name__": "program"})
    except BaseException as e:
        _report(fd, f"failed: {_describe(e)}")
        os._exit(1)
    _report(fd, "passed")
    os._exit(0)


def _enter_namespaces() -> list[str]:
    """New PID and network namespaces for the children: directly as root, else inside a user namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    applied = []
    if os.geteuid() != 0:
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(CLONE_NEWUSER) != 0:
            return []
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        applied.append("user namespace")
    for flag, name in ((CLONE_NEWPID, "pid namespace"), (CLONE_NEWNET, "network namespace")):
        if libc.unshare(flag) == 0:
            applied.append(name)
    return applied


def _confine(config: dict, in_user_namespace: bool) -> list[str]:
    """Limits, then (as root) become nobody, then drop capabilities; returns what was applied."""
    root = os.geteuid() == 0
    limits = {"cpu limit": (resource.RLIMIT_CPU, config["cpu"], config["cpu"] + 1),
              "memory limit": (resource.RLIMIT_AS, config["memory"], config["memory"]),
              "file size limit": (resource.RLIMIT_FSIZE, config["file"], config["file"]),
              "no core files": (resource.RLIMIT_CORE, 0, 0)}
    if os.path.isdir("/proc"):
        count = _tasks_of(NOBODY if root else os.getuid()) + config["procs"]
        limits["process limit"] = (resource.RLIMIT_NPROC, count, count)
    applied = []
    for name, (kind, soft, hard) in limits.items():
        old_hard = resource.getrlimit(kind)[1]
        if old_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        try:
            resource.setrlimit(kind, (soft, hard))
            applied.append(name)
        except (ValueError, OSError):
            pass  # a limit this OS does not take (macOS and RLIMIT_AS); isolation() shows it missing
    caps = 0
    if root:
        if LINUX and not all(_world_readable(p) for p in sys.path if os.path.isdir(p)):  # while still allowed to look
            caps = 1 << CAP_DAC_READ_SEARCH
        _prctl(PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        applied += ["user nobody"] + (["reads every file"] if caps else [])
    if LINUX and (root or in_user_namespace):  # nobody keeps only what it needs; a user namespace gave every capability
        libc = ctypes.CDLL(None, use_errno=True)
        header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)(caps, caps, caps, 0, 0, 0)  # (effective, permitted, inheritable) x 2 words
        if libc.capset(header, data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
    if caps:  # keeps reading the standard library in subprocesses too
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
    return applied


def _prctl(*args: int) -> None:
    """prctl(2) with its unused arguments zero; nothing outside Linux, whose protections these are."""
    if LINUX:
        ctypes.CDLL(None).prctl(*args, *[0] * (5 - len(args)))


def _tasks_of(uid: int) -> int:
    """Processes and threads whose real user is uid: what RLIMIT_NPROC counts."""
    count = 0
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, ValueError):
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


def _world_readable(path: str) -> bool:
    """Whether any user can reach and list path: o+x on every parent, o+rx on the folder itself."""
    path = os.path.abspath(path)
    if os.stat(path).st_mode & 0o005 != 0o005:
        return False
    while path != os.path.dirname(path):
        path = os.path.dirname(path)
        if not os.stat(path).st_mode & 0o001:
            return False
    return True


def _block_sockets() -> None:
    """No network namespace: make creating a socket raise. Stops honest code only (`_socket` stays reachable)."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the sandbox")

    socket.socket = socket.create_connection = socket.socketpair = refuse


def _report(fd: int, line: str) -> None:
    os.write(fd, (line.replace("\n", " ")[:500] + "\n").encode("utf-8", errors="replace"))


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _wait_code(pid: int) -> int:
    return _exit_code(os.waitpid(pid, 0)[1])


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else min(code, 255)  # killed by signal s -> 128 + s


if __name__ == "__main__":
    _supervise(json.loads(sys.argv[1]))
