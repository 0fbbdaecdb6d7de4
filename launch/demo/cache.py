"""Cache keys for the demo's expensive, deterministic stages (the rendered world, the trained base model).

A key is a digest of the config values a stage reads and of the source code of everything that makes its
output, so a change to either gives a new cache entry (old entries are left in place; delete the cache
folder to reclaim the space).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Iterable
from typing import Any

_ROOT = pathlib.Path(__file__).resolve().parents[2]  # the repository (parent of launch/)


def source_digest(paths: Iterable[str]) -> str:
    """sha256 over the `.py` files under `paths` (relative to the repository; files or packages), in order."""
    digest = hashlib.sha256()
    for rel in paths:
        path = _ROOT / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"cache key: no source at {path}")
        for file in files:
            digest.update(str(file.relative_to(_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def cache_key(settings: Any, sources: Iterable[str]) -> str:
    """12 hex digits over the JSON of `settings` and the digest of `sources`."""
    blob = json.dumps(settings, sort_keys=True, default=str) + source_digest(sources)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
