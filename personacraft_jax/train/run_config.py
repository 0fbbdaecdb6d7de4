"""A run's config across its launches: what a resume may change, and the configs the run has used.

`workdir/config.json` holds the config of the run's latest launch (launch.export rebuilds the networks from
it). `workdir/config_history.jsonl` has one line per config the run has used, in order:
`{"step": the step it began at, "config": {...}, "changes": {"a.b": [old, new], ...}}`.

A launch into a workdir with a checkpoint resumes the run, so its config is compared with `config.json`
key by key (dotted paths), before any network is built:

- a change of a key matching `RESUMABLE` is allowed, logged as a warning and recorded in the history:
  - `train.num_steps` (not below the resumed step), `train.learning_rate`, `train.end_lr`: the learning-rate
    schedule is rebuilt with the new values and continues at the resumed step (under 'cosine', a new
    `num_steps` also moves where the decay ends);
  - `checkpoint.*`, `log.*`: how often the run saves and logs, and its validation samples;
  - `mesh.*`, `mesh_dcn.*`, `sharding_rules.*`, `model.attention`, `model.remat`: how the same computation is
    laid out on the devices (a checkpoint restores onto any mesh);
- a key that only one of the two configs has comes from a code update that added or removed a setting:
  allowed and logged (shown as `<missing>` on the side without it);
- any other change (batch size, data, model, optimizer, seed, ...) would continue a different run under
  the same name: it is refused with every such key as `key: old -> new`. Start a new workdir instead.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
from absl import logging

from personacraft_jax import atomic_write

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"

# Keys a resume may change (dotted paths; fnmatch patterns, so "log.*" is the whole section).
RESUMABLE = (
    "train.num_steps",
    "train.learning_rate",
    "train.end_lr",
    "data.data_dir",  # the same data set, mounted elsewhere
    "checkpoint.*",
    "log.*",
    "mesh.*",
    "mesh_dcn.*",
    "sharding_rules*",
    "model.attention",
    "model.remat",
)

_MISSING = "<missing>"  # how a key that only one of two configs has is shown


@dataclasses.dataclass(frozen=True)
class Launch:
    """One launch of a run: its config (as JSON values), the step it resumes from (None: a fresh run) and
    its allowed changes from the stored config (`{key: (old, new)}`)."""

    workdir: str
    config: dict[str, Any]
    resumed_step: int | None
    changes: dict[str, tuple[Any, Any]]

    def record(self) -> None:
        """Writes `config.json` and adds the launch's config to the history when it is new (process 0 only;
        call once the launch has restored its checkpoint, so a failed resume changes neither file)."""
        if jax.process_index() != 0 or (self.resumed_step is not None and not self.changes):
            return
        history = os.path.join(self.workdir, HISTORY_FILE)
        lines = _read_lines(history)
        if not lines and self.resumed_step is not None:  # a run from before the history was kept
            lines.append(_history_line(None, _read_config(self.workdir), {}))
        lines.append(_history_line(self.resumed_step or 0, self.config, self.changes))
        atomic_write.write_text(history, "".join(lines))
        atomic_write.write_json(os.path.join(self.workdir, CONFIG_FILE), self.config)


def check_launch(workdir: str | os.PathLike, config: Any) -> Launch:
    """This launch of the run in `workdir`: for a resume (from the latest checkpoint, or
    `checkpoint.restore_step`), checks `config` against the stored one (raises ValueError naming each change a
    resume may not make, or a `train.num_steps` below the resumed step) and logs the allowed changes."""
    workdir = os.fspath(workdir)
    new = json.loads(config.to_json_best_effort())
    latest = latest_checkpoint_step(os.path.join(workdir, "checkpoints"))
    if latest is None:  # a fresh run (or a restore_step with nothing to restore: the Trainer's restore says so)
        return Launch(workdir, new, None, {})
    restore_step = config.checkpoint.get("restore_step")
    step = latest if restore_step is None else int(restore_step)
    if config.train.num_steps < step:
        raise ValueError(
            f"config train.num_steps={config.train.num_steps}, but the run resumes at step {step} ({workdir}); "
            f"give num_steps >= {step} to continue it, or a new --workdir"
        )
    changes = differences(_read_config(workdir, step), new)
    refused = {key: change for key, change in changes.items() if not (is_resumable(key) or _MISSING in change)}
    if refused:
        raise ValueError(_refusal(workdir, step, refused))
    for key, (old, value) in changes.items():
        logging.warning("resuming at step %d with a changed setting: %s", step, _shown(key, old, value))
    return Launch(workdir, new, step, changes)


def latest_checkpoint_step(directory: str | os.PathLike) -> int | None:
    """The latest finalized checkpoint step under `directory` (None: none, or no such folder)."""
    import orbax.checkpoint as ocp

    if not os.path.isdir(directory):
        return None
    return max(ocp.utils.checkpoint_steps(directory), default=None)


def is_resumable(key: str) -> bool:
    """Whether a resume may change the dotted config key `key` (see `RESUMABLE`)."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUMABLE)


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`{dotted key: (old value, new value)}` of the leaves that differ, in key order (`_MISSING` for a key
    only one side has)."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted(set(flat_old) | set(flat_new))
    return {
        key: (flat_old.get(key, _MISSING), flat_new.get(key, _MISSING))
        for key in keys
        if flat_old.get(key, _MISSING) != flat_new.get(key, _MISSING)
    }


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _refusal(workdir: str, step: int, refused: Mapping[str, tuple[Any, Any]]) -> str:
    listed = "".join(f"\n  {_shown(key, old, new)}" for key, (old, new) in refused.items())
    return (
        f"{os.path.join(workdir, CONFIG_FILE)}: resuming at step {step} with settings that would make a "
        f"different run:{listed}\nA resume may change only {', '.join(RESUMABLE)}. Keep the run's settings, "
        "or start a new --workdir."
    )


def _shown(key: str, old: Any, new: Any) -> str:
    return f"{key}: {_value(old)} -> {_value(new)}"


def _value(value: Any) -> str:
    return value if value is _MISSING else repr(value)


def _read_config(workdir: str, step: int | None = None) -> dict[str, Any]:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        at = "" if step is None else f" at step {step}"
        raise FileNotFoundError(
            f"{path}: missing, but the run has a checkpoint{at}; a resume is checked against the run's config"
        )
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a JSON config ({e})") from e


def _read_lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]


def _history_line(step: int | None, config: Mapping[str, Any], changes: Mapping[str, tuple[Any, Any]]) -> str:
    entry = {"step": step, "changes": {key: list(change) for key, change in changes.items()}, "config": config}
    return json.dumps(entry) + "\n"
