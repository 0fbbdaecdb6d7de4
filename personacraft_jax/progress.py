"""Progress bars for long work that stay readable in log files.

On a terminal a bar redraws a few times a second; when stderr is not a terminal (a CI log, `nohup`, a
cluster job's output file) it prints a line at most every `log_interval_s` seconds instead of flooding the
log with carriage-return redraws.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class _LogLines:
    """A stream for tqdm that turns its carriage-return redraws into whole lines (for log files)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip("\n")
        if line.strip():
            self._stream.write(line + "\n")

    def flush(self) -> None:
        self._stream.flush()


def progress_bar(total: int | None, desc: str, unit: str = "it", log_interval_s: float = 30.0, **kwargs: Any) -> tqdm:
    """A tqdm bar over `total` units (None = unknown) labelled `desc`."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        mininterval=0.2 if interactive else log_interval_s,
        maxinterval=max(10.0, log_interval_s) if not interactive else 10.0,
        dynamic_ncols=interactive,
        **({} if interactive or "file" in kwargs else {"file": _LogLines(sys.stderr)}),
        **kwargs,
    )
