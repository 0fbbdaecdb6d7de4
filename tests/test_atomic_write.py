"""Atomic text / JSON writes: complete new content or the old file, never a partial one or a stray temp file."""

import json
import os

import pytest

from personacraft_jax import atomic_write


def test_write_json_round_trips_and_replaces(tmp_path):
    path = tmp_path / "settings.json"
    atomic_write.write_json(path, {"b": 1, "a": [1.5, "x"]}, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": [1.5, "x"], "b": 1}
    assert path.read_text().endswith("\n") and path.read_text().index('"a"') < path.read_text().index('"b"')
    atomic_write.write_text(path, "replaced")
    assert path.read_text() == "replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text("old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write.write_json(path, {"new": True})
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_unserialisable_value_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write.write_json(tmp_path / "x.json", {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_permissions_follow_the_umask_or_the_replaced_file(tmp_path):
    old_umask = os.umask(0o027)
    try:
        new = atomic_write.write_text(tmp_path / "new.json", "{}")
        assert new.stat().st_mode & 0o777 == 0o640  # 0o666 & ~0o027, as open() would, not mkstemp's 0o600
    finally:
        os.umask(old_umask)
    existing = tmp_path / "existing.json"
    existing.write_text("old")
    existing.chmod(0o604)
    atomic_write.write_text(existing, "new")
    assert existing.stat().st_mode & 0o777 == 0o604 and existing.read_text() == "new"


def test_missing_folder_names_the_target(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cannot write .*nowhere/x\.json"):
        atomic_write.write_json(tmp_path / "nowhere" / "x.json", {})
