"""Running a lab's checks against the learner's file, and the helpers every check is written with.

A check is a function of the learner's `Workspace` registered on a lab's `CheckList` under an item (the
function or class it is about). It passes by returning, and fails by raising `CheckFailed` with a message
in the learner's terms ("your scores are sqrt(head_dim) times too large"). `run_checks` turns whatever else
happens into one line too: a name not defined yet or a body still raising `NotImplementedError` is
"not implemented yet", any other exception is its type, message and the learner's file:line. A check never
shows a traceback. Each check starts from the same seed, and one that runs too long (an endless loop in the
learner's code) is stopped where the platform allows it (`signal.setitimer`, main thread only).

The common way to say *which* mistake was made is `diagnose`: the check computes what a few typical
mistakes would return and names the one the learner's output equals.
"""

import signal
import threading
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmlab.common.errors import UserError

CHECK_SECONDS = 60.0  # far above any check's honest run time; only an endless loop gets here


class CheckFailed(AssertionError):
    """A check's verdict: the message says what is wrong in the learner's terms."""


class NotImplementedYet(Exception):
    """The learner's file does not define the name a check needs yet."""


class CheckTimeout(BaseException):
    """Raised by the timer inside the learner's code; a BaseException, so their `except Exception` cannot
    swallow it."""


@dataclass
class Check:
    item: str  # the function or class of the learner's file it checks (what `--only` selects)
    title: str  # what it checks, as a short sentence
    fn: Callable[["Workspace"], None]


class CheckList(list):
    """A lab's checks in the order they run; `@CHECKS.add("attention", "title")` registers one."""

    def add(self, item: str, title: str) -> Callable:
        def register(fn: Callable[["Workspace"], None]) -> Callable:
            self.append(Check(item, title, fn))
            return fn
        return register

    def items(self) -> list[str]:
        return list(dict.fromkeys(c.item for c in self))


@dataclass
class Workspace:
    """The learner's file, loaded fresh from disk (every `check` sees the latest save)."""
    path: Path
    module: types.ModuleType

    def get(self, name: str):
        if not hasattr(self.module, name):
            raise NotImplementedYet(f"{name} is not defined in {self.path.name}")
        return getattr(self.module, name)


def load_workspace(path: Path, name: str) -> Workspace:
    """Execute `path` as a module. Compiled from the text itself (no .pyc), so two saves within one second
    still load the second. Errors while loading propagate (the caller reports them)."""
    module = types.ModuleType(f"llmlab_lab_{name.replace('-', '_')}")
    module.__file__ = str(path)
    code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
    exec(code, module.__dict__)
    return Workspace(path, module)


@dataclass
class Result:
    item: str
    title: str
    status: str  # "pass", "fail" or "todo" (not implemented yet)
    message: str = ""

    def line(self) -> str:
        mark = "✓" if self.status == "pass" else "✗"
        tail = {"pass": "", "todo": " — not implemented yet", "fail": f" — {self.message}"}[self.status]
        return f"{mark} {self.item}: {self.title}{tail}"


@dataclass
class Report:
    """What `check` returns: one `Result` per check. Shows as the ✓/✗ lines in a notebook."""
    lab: str
    path: Path
    results: list[Result] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.status == "pass" for r in self.results)

    def text(self) -> str:
        n_ok = sum(r.status == "pass" for r in self.results)
        summary = f"{n_ok}/{len(self.results)} checks pass" + (": well done." if self.passed else ".")
        return "\n".join([f"{self.lab} ({self.path})"] + [r.line() for r in self.results] + [summary])

    def __repr__(self) -> str:
        return self.text()


def learner_frame(error: BaseException, path: Path) -> str:
    """ "attention.py:12" for the innermost frame of the traceback inside the learner's file, else ""."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    return f"{path.name}:{frames[-1].lineno}" if frames else ""


def describe_error(error: BaseException, path: Path) -> str:
    """One line for an exception in (or while calling) the learner's code: type, message, where."""
    where = learner_frame(error, path)
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return f"{text} (at {where})" if where else text


def _run_one(check: Check, ws: Workspace) -> Result:
    torch.manual_seed(0)
    try:
        with _time_limit(CHECK_SECONDS):
            check.fn(ws)
    except (NotImplementedYet, NotImplementedError):
        return Result(check.item, check.title, "todo")
    except CheckFailed as e:
        return Result(check.item, check.title, "fail", str(e))
    except CheckTimeout:
        return Result(check.item, check.title, "fail",
                      f"still running after {CHECK_SECONDS:.0f} s: is there an endless loop?")
    except (Exception, SystemExit) as e:  # the learner's code raised (or called exit()): one line, no traceback
        return Result(check.item, check.title, "fail", describe_error(e, ws.path))
    return Result(check.item, check.title, "pass")


class _time_limit:
    """Interrupt a check after `seconds` (SIGALRM; a no-op off the main thread or without setitimer)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.active = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()

    def _fire(self, signum, frame):
        raise CheckTimeout()

    def __enter__(self):
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


def run_checks(lab: str, checks: CheckList, path: Path, only: str | None = None) -> Report:
    """Run `checks` (those of item `only`, if given) against the file at `path`."""
    items = checks.items()
    if only is not None and only not in items:
        raise UserError(f"lab {lab}: no item {only!r}; its items are {', '.join(items)}")
    if not path.is_file():
        raise UserError(f"{path}: no such file; run `llmlab labs start {lab} --dir {path.parent}` first")
    selected = [c for c in checks if only is None or c.item == only]
    report = Report(lab, path)
    try:
        ws = load_workspace(path, lab)
    except (Exception, SystemExit) as e:  # a syntax error or a failing top-level line: every check fails with it
        message = f"{path.name} does not load: {describe_error(e, path)}"
        if isinstance(e, SyntaxError):
            message = f"{path.name} does not load: SyntaxError: {e.msg} (at {path.name}:{e.lineno})"
        report.results = [Result(c.item, c.title, "fail", message) for c in selected]
        return report
    report.results = [_run_one(c, ws) for c in selected]
    return report


# ---- helpers for writing checks --------------------------------------------------------------------------

def call(fn: Callable, *args, **kwargs):
    """Call the learner's function; a missing argument in their signature reads as a hint, not a TypeError."""
    try:
        return fn(*args, **kwargs)
    except TypeError as e:
        if "argument" in str(e) and e.__traceback__ is not None and e.__traceback__.tb_next is None:
            name = getattr(fn, "__qualname__", getattr(fn, "__name__", "it"))
            raise CheckFailed(f"{name} cannot be called as the lab says ({e}): keep the signature "
                              "given in the file") from None
        raise


def expect_tensor(out, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """`out` must be a finite tensor of `shape`; else a message naming `what` returned what."""
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what} returned {type(out).__name__}, not a tensor: did you forget `return`?"
                          if out is None else f"{what} returned {type(out).__name__}, not a tensor")
    if tuple(out.shape) != tuple(shape):
        raise CheckFailed(f"{what} returned shape {tuple(out.shape)}, expected {tuple(shape)}")
    if not torch.isfinite(out).all():
        raise CheckFailed(f"{what} returned NaN or inf")
    return out


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Equal within float32 rounding, compared in float64 (so a float64-inside implementation passes)."""
    a, b = a.detach().double(), b.detach().double()
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def diagnose(out: torch.Tensor, expected: torch.Tensor, mistakes: dict[str, Any], otherwise: str,
             rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Pass if `out` equals `expected`; else fail with the message of the first typical mistake it equals,
    or `otherwise` with the largest difference. `mistakes`: message -> what that mistake returns, as a tensor,
    a tuple of variants, or a function computing it (skipped if it cannot run on these shapes)."""
    if close(out, expected, rtol, atol):
        return
    for message, wrong in mistakes.items():
        if callable(wrong):
            try:
                wrong = wrong()
            except Exception:  # this mistake is impossible for these shapes (x @ w with w not square)
                continue
        if any(close(out, w, rtol, atol) for w in (wrong if isinstance(wrong, tuple) else (wrong,))):
            raise CheckFailed(message)
    raise CheckFailed(f"{otherwise} (largest difference {max_diff(out, expected):.3g})")
