"""orbax checkpoints of the train state and the data-iterator state.

One checkpoint = `state` (the TrainState pytree: trainable parameters, optimizer state, step, RNG) +
`data` (a JSON dict {"process_<i>": grain iterator state} of every process, gathered to the primary process
and captured synchronously at save time, so an async save never sees a later iterator position). Resuming
with a different number of processes is an error (per-process iterator states cannot be re-split); the
parameters themselves restore onto any mesh. Saves are atomic (orbax writes to a temporary directory
and renames it when complete); `keep` bounds how many are kept.

Restores go into *target* shardings (any mesh), and every failure is an error: a missing directory item,
a mismatched structure or shape never turns into a silent fresh start.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored as asked."""


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, the form `restore` takes."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)


class Checkpointer:
    """Keep-last-K, optionally asynchronous checkpoints under `directory`."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "data"))
        self.directory = directory

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
        """Starts saving `state` and `data_state` as checkpoint `step` (waits for a previous async save)."""
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            force=True,
        )

    def _checked_step(self, step: int | None) -> int:
        """`step`, or the latest one for None; raises CheckpointError when there is no such checkpoint."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.directory}: no checkpoint to restore")
        if step not in self.all_steps():
            raise CheckpointError(f"{self.directory}: no checkpoint at step {step}; have {self.all_steps()}")
        return step

    def restore(self, step: int | None, target: Any, with_data: bool = True) -> tuple[Any, dict[str, Any] | None]:
        """Restores checkpoint `step` (None = latest) into `target` (see `abstract_with_shardings`); returns
        (state, data state) — the data state only `with_data`."""
        step = self._checked_step(step)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), **({"data": ocp.args.JsonRestore()} if with_data else {})
                ),
            )
        except Exception as e:  # orbax raises many types; re-raise with the checkpoint named.
            raise CheckpointError(f"{self.directory}: restoring step {step} failed: {e}") from e
        return restored["state"], restored["data"] if with_data else None

    def restore_params(self, step: int | None, target: Any) -> Any:
        """Only `state.params` of checkpoint `step` (None = latest), restored into `target` (the abstract
        params with shardings): no optimizer moments are read, e.g. for export."""
        step = self._checked_step(step)
        path = ocp.step.standard_name_format().find_step(self._manager.directory, step).path / "state"
        item = {"params": target}
        restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, dtype=x.dtype), item)
        try:
            restored = ocp.PyTreeCheckpointer().restore(
                path, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
            )
        except Exception as e:  # orbax raises many types; re-raise with the checkpoint named.
            raise CheckpointError(f"{self.directory}: restoring the parameters of step {step} failed: {e}") from e
        return restored["params"]

    def wait(self) -> None:
        """Blocks until an in-flight async save is complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
