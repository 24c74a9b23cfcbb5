"""The single place library code prints through, so recipes and tests can silence it."""

import sys

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def info(msg: str) -> None:
    if not _quiet:
        print(msg, file=sys.stderr, flush=True)
