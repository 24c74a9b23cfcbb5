"""`llmlab labs list | start | check | solution`: the guided path of labs.

    llmlab labs list                                   # the path, in order
    llmlab labs start attention --dir work             # work/attention.py to fill in, work/attention.ipynb
    llmlab labs check attention --dir work --only attention
    llmlab labs solution attention                     # the reference: llmlab's own code

`check` prints ✓/✗ per check and fails (exit status 2, one line, no traceback) unless every selected check
passes. The components are in `llmlab.labs`; `llmlab.labs.check("attention")` does the same in a notebook.
"""

import dataclasses
from dataclasses import dataclass

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.errors import UserError
from llmlab.labs import LABS, check, get_lab, start
from llmlab.labs.checking import Report


@dataclass
class ListArgs:
    pass


@dataclass
class StartArgs:
    name: str = arg(dataclasses.MISSING, "the lab (see `llmlab labs list`)", positional=True)
    dir: str = arg(".", "folder to write NAME.py and NAME.ipynb into")
    solution: bool = arg(False, "write the reference solution instead of the skeleton")
    force: bool = arg(False, "overwrite NAME.py and NAME.ipynb even if you have changed them")


@dataclass
class CheckArgs:
    name: str = arg(dataclasses.MISSING, "the lab (see `llmlab labs list`)", positional=True)
    dir: str = arg(".", "folder holding NAME.py")
    only: str | None = arg(None, "check one function or class of the lab only (e.g. attention)")


@dataclass
class SolutionArgs:
    name: str = arg(dataclasses.MISSING, "the lab (see `llmlab labs list`)", positional=True)


def list_labs(args: ListArgs) -> list:
    rows = [(str(i), lab.name, f"{lab.minutes} min", lab.teaches, lab.mirrors) for i, lab in enumerate(LABS, 1)]
    header = ("#", "lab", "time", "what it teaches", "mirrors")
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return LABS


def start_lab(args: StartArgs) -> list:
    paths = start(args.name, args.dir, solution=args.solution, force=args.force)
    what = "the reference solution" if args.solution else "the skeleton to fill in"
    log.info(f"wrote {paths[0]} ({what}) and {paths[1]}\n"
             f"next: open {paths[1].name} in Jupyter, or edit {paths[0].name} and run "
             f"`llmlab labs check {args.name} --dir {args.dir}`")
    return paths


def check_lab(args: CheckArgs) -> Report:
    report = check(args.name, args.dir, only=args.only)
    print(report.text())
    if not report.passed:
        failing = sum(r.status != "pass" for r in report.results)
        raise UserError(f"{report.path}: {failing} of {len(report.results)} checks do not pass yet; "
                        "fix the first ✗ above and run the check again")
    return report


def solution(args: SolutionArgs) -> str:
    text = get_lab(args.name).solution_with_sources()
    print(text)
    return text
