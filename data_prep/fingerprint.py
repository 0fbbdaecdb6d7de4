"""The fingerprint of a prep run: what its dataset is made from (the inputs' contents and the config).

`digest` = SHA-256 over the content config (the prep config without the keys that cannot change an
example, `prep_job.content_config`) and every scene's identity: its fields, with each file path replaced by
the file's name and SHA-256. So moving or copying the input folders keeps the fingerprint, and editing,
adding or removing an image, fit or caption changes it. Model folders (SMPL-X, faces, SDXL) are identified
by their paths in the config; their files are not hashed, so a model replaced in place is not detected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def file_sha256(path: str | pathlib.Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def scene_identity(scene: Any) -> dict[str, Any]:
    """The scene's kind and fields; `*_path` fields become {name, sha256} of the file, `*_dir` fields are left
    out (where the files are does not change the example)."""
    identity: dict[str, Any] = {"kind": type(scene).__name__}
    for key, value in dataclasses.asdict(scene).items():
        if key.endswith("_dir"):
            continue
        if key.endswith("_path") and value is not None:
            value = {"name": pathlib.Path(value).name, "sha256": file_sha256(value)}
        identity[key] = value
    return identity


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


def fingerprint(
    content_config: Mapping[str, Any], scenes: Sequence[Any], progress: Callable[[], None] | None = None
) -> dict[str, Any]:
    """{'digest', 'config': content_config, 'scenes': {'count', 'digest'}}; reads every input file once."""
    digest = hashlib.sha256()
    for scene in scenes:
        digest.update(json.dumps(scene_identity(scene), sort_keys=True).encode("utf-8") + b"\n")
        if progress is not None:
            progress()
    parts = {"config": dict(content_config), "scenes": {"count": len(scenes), "digest": digest.hexdigest()}}
    return {"digest": _sha256_json(parts), **parts}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Readable differences between a stored and a new fingerprint."""
    if not old:
        return ["the stored dataset records no fingerprint"]
    changes = []
    old_config, new_config = old.get("config", {}), new.get("config", {})
    for key in sorted(set(old_config) | set(new_config)):
        if old_config.get(key) != new_config.get(key):
            changes.append(f"config.{key}: {old_config.get(key)!r} -> {new_config.get(key)!r}")
    old_scenes, new_scenes = old.get("scenes", {}), new.get("scenes", {})
    if old_scenes != new_scenes:
        changes.append(
            f"inputs: {old_scenes.get('count')} scenes (digest {str(old_scenes.get('digest'))[:12]}) -> "
            f"{new_scenes.get('count')} scenes (digest {str(new_scenes.get('digest'))[:12]})"
        )
    return changes or [f"fingerprint {str(old.get('digest'))[:12]} -> {str(new.get('digest'))[:12]}"]
