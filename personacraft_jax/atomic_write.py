"""Whole-or-nothing text and JSON files: written to a temporary file in the same folder, flushed to disk,
then renamed over the target.

A reader, a crash of the process or a power loss leaves either the previous file or the complete new one,
never a truncated one. The new file gets the old file's permissions, or the umask's default for a new file
(as `open(path, "w")` would), not the temporary file's owner-only mode.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import tempfile
from typing import Any


def _new_file_mode(path: pathlib.Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)  # reading the umask means setting it: put it straight back
        os.umask(umask)
        return 0o666 & ~umask


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Writes `text` (UTF-8) to `path` atomically; returns the path. The folder must exist."""
    path = pathlib.Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, value: Any, **dumps_kwargs: Any) -> pathlib.Path:
    """`json.dumps(value, indent=2, **dumps_kwargs)` plus a newline, written atomically."""
    return write_text(path, json.dumps(value, **{"indent": 2, **dumps_kwargs}) + "\n")
