"""Checkpoint integrity: checksum manifests, corrupted steps, restoring a chosen step, non-finite saves.

A small hand-made TrainState on one device: no train step is compiled.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from personacraft_jax.train import checkpoint as checkpoint_lib
from personacraft_jax.train.step import TrainState


def _state(step: int, scale: float = 1.0) -> TrainState:
    params = {"scnet": {"conv": {"kernel": scale * jnp.arange(4096.0).reshape(64, 64)}}}
    return TrainState(jnp.array(step), params, optax.adamw(1e-3).init(params), jnp.zeros(2, jnp.uint32))


def _target(state: TrainState) -> TrainState:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def _saved(directory: pathlib.Path, steps: tuple[int, ...], async_save: bool = True) -> None:
    checkpointer = checkpoint_lib.Checkpointer(directory, keep=3, async_save=async_save)
    for step in steps:
        checkpointer.save(step, _state(step, scale=float(step)), {"process_0": f"at {step}"})
    checkpointer.close()


def _largest_file(step_dir: pathlib.Path) -> pathlib.Path:
    return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_middle(path: pathlib.Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(b ^ 0xFF for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("async_save", [True, False])
def test_flipped_bytes_fail_the_restore_naming_step_and_file(tmp_path, async_save):
    _saved(tmp_path, (2, 4), async_save=async_save)
    corrupted = _largest_file(tmp_path / "4")
    _flip_middle(corrupted)
    checkpointer = checkpoint_lib.Checkpointer(tmp_path, keep=3)
    relative = corrupted.relative_to(tmp_path / "4").as_posix()
    with pytest.raises(checkpoint_lib.CheckpointError, match=rf"step 4 .*{relative}.*verified steps: \[2\]"):
        checkpointer.restore(None, _target(_state(0)))
    with pytest.raises(checkpoint_lib.CheckpointError, match=rf"step 4 .*{relative}"):
        checkpointer.restore_params(4, _target(_state(0)).params)
    checkpointer.close()


def test_an_explicitly_chosen_good_step_restores(tmp_path):
    _saved(tmp_path, (2, 4))
    _flip_middle(_largest_file(tmp_path / "4"))
    checkpointer = checkpoint_lib.Checkpointer(tmp_path, keep=3)
    state, data = checkpointer.restore(2, _target(_state(0)))
    np.testing.assert_array_equal(
        state.params["scnet"]["conv"]["kernel"], _state(2, 2.0).params["scnet"]["conv"]["kernel"]
    )
    assert data == {"process_0": "at 2"}
    checkpointer.close()


def test_a_step_without_its_manifest_is_refused(tmp_path):
    _saved(tmp_path, (2, 4))
    (tmp_path / "4" / checkpoint_lib.MANIFEST_NAME).unlink()
    checkpointer = checkpoint_lib.Checkpointer(tmp_path, keep=3)
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"step 4 .*no checksum manifest.*verified steps: \[2\]"):
        checkpointer.restore(None, _target(_state(0)))
    checkpointer.close()


def test_added_and_removed_files_are_named(tmp_path):
    _saved(tmp_path, (2,))
    (tmp_path / "2" / "state" / "stray").write_text("x")
    checkpointer = checkpoint_lib.Checkpointer(tmp_path, keep=3)
    with pytest.raises(
        checkpoint_lib.CheckpointError, match=r"step 2 .*state/stray: not in the manifest.*verified steps: \[\]"
    ):
        checkpointer.restore(None, _target(_state(0)))
    (tmp_path / "2" / "state" / "stray").unlink()
    (tmp_path / "2" / "data" / "metadata").unlink()
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"step 2 .*data/metadata: missing"):
        checkpointer.restore(None, _target(_state(0)))
    checkpointer.close()


def test_non_finite_state_is_not_saved_and_the_last_finite_step_is_kept(tmp_path):
    checkpointer = checkpoint_lib.Checkpointer(tmp_path, keep=1)
    checkpointer.save(2, _state(2), {"process_0": "at 2"})
    bad = _state(4)
    bad = bad.replace(
        params={"scnet": {"conv": {"kernel": bad.params["scnet"]["conv"]["kernel"].at[3, 5].set(jnp.nan)}}}
    )
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"refusing to save step 4: .*scnet.*conv.*kernel"):
        checkpointer.save(4, bad, {"process_0": "at 4"})
    checkpointer.wait()
    assert checkpointer.all_steps() == [2]
    state, _ = checkpointer.restore(None, _target(_state(0)))
    assert int(state.step) == 2
    checkpointer.close()
