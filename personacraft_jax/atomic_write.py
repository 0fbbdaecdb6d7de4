"""Whole-or-nothing text and JSON files: written to a temporary file in the same folder, then renamed.

A reader (or a crash) sees either the previous file or the complete new one, never a truncated one.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Writes `text` (UTF-8) to `path` atomically; returns the path."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, value: Any, **dumps_kwargs: Any) -> pathlib.Path:
    """`json.dumps(value, indent=2, **dumps_kwargs)` plus a newline, written atomically."""
    return write_text(path, json.dumps(value, **{"indent": 2, **dumps_kwargs}) + "\n")
