"""Running a launch/ command: absl's app.run, with `--help` exiting 0 (absl's help flags exit 1)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app

_HELP_FLAGS = ("--help", "-h", "--helpshort", "--helpfull")


def run(main: Callable[[list[str]], None]) -> None:
    """`--help` / `-h` / `--helpshort` / `--helpfull` print the usage to stdout and exit 0; else app.run."""
    args = sys.argv[1:]
    if any(a in _HELP_FLAGS for a in args):
        app.usage(shorthelp="--helpfull" not in args, writeto_stdout=True, exitcode=0)
    app.run(main)
