"""orbax checkpoints of the train state and the data-iterator state.

One checkpoint = `state` (the TrainState pytree: trainable parameters, optimizer state, step, RNG) +
`data` (a JSON dict {"process_<i>": grain iterator state} of every process, gathered to the primary process
and captured synchronously at save time, so an async save never sees a later iterator position). Resuming
with a different number of processes is an error (per-process iterator states cannot be re-split); the
parameters themselves restore onto any mesh. Saves are atomic (orbax writes to a temporary directory
and renames it when complete); `keep` bounds how many are kept.

Integrity: once a step's save is complete (at the next save, `wait` or `close`), the primary process writes
`<step>/checksums.json`: the SHA-256 of every other file of the step folder, written atomically (orbax
ignores the file and deletes it with its step). Every restore first checks the step against it: a changed,
missing or unlisted file, or a complete step without a manifest (a run killed between orbax's commit and
the manifest, or a step saved before manifests existed), is a CheckpointError naming the step, the file
and the steps that do verify; `restore(step=...)` (config `checkpoint.restore_step`, `launch.export
--step`) restores one of those on purpose, and `write_manifest` accepts a step one trusts as it is.
Non-finite states are never saved: `save` raises, naming the step and the leaves, and leaves the saved
steps as they are, so `keep` rotation can never drop the last finite checkpoint for a non-finite one.

Restores go into *target* shardings (any mesh), and every failure is an error: a missing directory item,
a mismatched structure or shape never turns into a silent fresh start.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from concurrent import futures
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from personacraft_jax import atomic_write

MANIFEST_NAME = "checksums.json"  # inside each step folder
SET_ASIDE_NAME = "set_aside"  # steps newer than an explicitly restored one are moved here
_HASH_CHUNK = 1 << 24


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored as asked."""


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def step_checksums(step_dir: pathlib.Path) -> dict[str, str]:
    """{path relative to `step_dir` (POSIX): SHA-256 hex} of every file of the step but the manifest."""
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p != step_dir / MANIFEST_NAME)
    with futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # hashlib releases the GIL
        digests = list(pool.map(_sha256, files))
    return {p.relative_to(step_dir).as_posix(): d for p, d in zip(files, digests, strict=True)}


def write_manifest(step_dir: pathlib.Path) -> pathlib.Path:
    """Writes `step_dir/checksums.json` atomically (call once the step's save is complete)."""
    return atomic_write.write_json(step_dir / MANIFEST_NAME, {"sha256": step_checksums(step_dir)}, sort_keys=True)


def manifest_problems(step_dir: pathlib.Path) -> list[str]:
    """What does not match `step_dir`'s manifest ('<file>: <what>'); empty when the step verifies."""
    path = step_dir / MANIFEST_NAME
    if not path.is_file():
        return [
            f"no checksum manifest {path} (a run stopped between orbax's commit and the manifest, or a step saved "
            "before manifests existed, leaves none; `write_manifest(<step dir>)` accepts a step you trust as it is)"
        ]
    try:
        expected = json.loads(path.read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        return [f"{path}: unreadable manifest ({e!r})"]
    actual = step_checksums(step_dir)
    problems = [f"{name}: missing" for name in sorted(set(expected) - set(actual))]
    problems += [f"{name}: not in the manifest" for name in sorted(set(actual) - set(expected))]
    problems += [
        f"{name}: SHA-256 {actual[name]} differs from the manifest's {expected[name]}"
        for name in sorted(set(actual) & set(expected))
        if actual[name] != expected[name]
    ]
    return problems


@jax.jit
def _all_finite(leaves: list[jax.Array]) -> list[jax.Array]:
    return [jnp.all(jnp.isfinite(x)) for x in leaves]


def non_finite_leaves(tree: Any) -> list[str]:
    """Key paths ('params.scnet.conv.kernel') of the floating-point leaves of `tree` holding a NaN or an inf."""
    leaves = [
        (path, x)
        for path, x in jax.tree_util.tree_leaves_with_path(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    finite = jax.device_get(_all_finite([x for _, x in leaves]))
    return [jax.tree_util.keystr(path, simple=True, separator=".") for (path, _), ok in zip(leaves, finite) if not ok]


def _barrier(name: str) -> None:
    """With several processes: waits until all of them get here (what the primary wrote is then visible)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, the form `restore` takes."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)


class Checkpointer:
    """Keep-last-K, optionally asynchronous checkpoints under `directory`, each with a checksum manifest."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "data"))
        self.directory = directory
        self._async_save = async_save
        self._unrecorded: list[int] = []  # steps saved here whose manifest is not written yet

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def step_dir(self, step: int) -> pathlib.Path:
        """The folder of checkpoint `step`."""
        return pathlib.Path(ocp.step.standard_name_format().find_step(self._manager.directory, step).path)

    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
        """Starts saving `state` and `data_state` as checkpoint `step` (waits for a previous async save and
        writes its manifest). Raises CheckpointError, saving nothing, when a floating-point leaf of `state` is
        not finite: the checkpoints on disk stay as they are."""
        bad = non_finite_leaves(state)
        if bad:
            raise CheckpointError(
                f"{self.directory}: refusing to save step {step}: non-finite values in {', '.join(bad[:8])}"
                f"{f' and {len(bad) - 8} more leaves' if len(bad) > 8 else ''}; the saved steps "
                f"{self.all_steps()} are kept"
            )
        self._record_finished()
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            force=True,
        )
        self._unrecorded.append(step)
        if not self._async_save:
            self._record_finished()

    def _record_finished(self) -> None:
        """Waits for an in-flight save, then writes the manifests of the steps saved since the last call."""
        steps, self._unrecorded = self._unrecorded, []
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            for step in steps:
                write_manifest(self.step_dir(step))
        if steps:  # every process saved the same steps, so all of them get here
            _barrier(f"checkpoint manifests {steps}")

    def verified_steps(self) -> list[int]:
        """The steps whose files match their manifests."""
        self._record_finished()
        return [step for step in self.all_steps() if not manifest_problems(self.step_dir(step))]

    def verify(self, step: int) -> None:
        """Raises CheckpointError unless checkpoint `step`'s files match its manifest (each process reads them
        all); the error names the files and the steps that verify, and how to restore one of those instead."""
        self._record_finished()
        problems = manifest_problems(self.step_dir(step))
        if problems:
            good = [s for s in self.verified_steps() if s != step]
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise CheckpointError(
                f"{self.directory}: checkpoint step {step} fails verification ({self.step_dir(step)}): {shown}. "
                f"verified steps: {good}. To restore one of them on purpose, set config "
                "checkpoint.restore_step=<step> (launch.train) or pass --step=<step> (launch.export)"
            )

    def _checked_step(self, step: int | None) -> int:
        """`step`, or the latest one for None, verified; raises CheckpointError when there is no such
        checkpoint or it fails verification."""
        self._record_finished()
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.directory}: no checkpoint to restore")
        if step not in self.all_steps():
            raise CheckpointError(f"{self.directory}: no checkpoint at step {step}; have {self.all_steps()}")
        self.verify(step)
        return step

    def set_aside_steps_after(self, step: int) -> list[int]:
        """Moves the checkpoints newer than `step` to `directory/set_aside/<step>` (not deleted) so that a
        run resumed from `step` can save those steps again; returns their steps. Raises CheckpointError when
        a set-aside folder of the same step exists already."""
        self._record_finished()
        newer = [s for s in self.all_steps() if s > step]
        targets = {s: pathlib.Path(self._manager.directory) / SET_ASIDE_NAME / str(s) for s in newer}
        taken = [str(t) for t in targets.values() if t.exists()]
        if taken:
            raise CheckpointError(f"{self.directory}: cannot set aside steps {newer}: {taken} exist already")
        if jax.process_index() == 0:
            for s, target in targets.items():
                target.parent.mkdir(exist_ok=True)
                os.replace(self.step_dir(s), target)
        _barrier(f"checkpoint set aside after {step}")
        self._manager.reload()
        return newer

    def restore(self, step: int | None, target: Any, with_data: bool = True) -> tuple[Any, dict[str, Any] | None]:
        """Restores checkpoint `step` (None = latest), after verifying it, into `target` (see
        `abstract_with_shardings`); returns (state, data state) — the data state only `with_data`."""
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
        """Only `state.params` of checkpoint `step` (None = latest), after verifying the step, restored into
        `target` (the abstract params with shardings): no optimizer moments are read, e.g. for export."""
        step = self._checked_step(step)
        path = self.step_dir(step) / "state"
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
        """Blocks until an in-flight async save is complete on disk, with its manifest."""
        self._record_finished()

    def close(self) -> None:
        self._record_finished()
        self._manager.close()
