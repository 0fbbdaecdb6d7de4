"""Start-up checks of a training run's settings that would otherwise fail late, or never.

Each error names the config field (or `--workdir`) and what was expected. Checked before any network is
built, so a bad value costs seconds, not a compile.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from personacraft_jax.sampling import schedulers

# The training noise schedule's fields that must agree with the frozen UNet's scheduler config.
_SCHEDULE_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")


def check_workdir(workdir: str | os.PathLike) -> None:
    """The run folder must be a file-system path every process sees (a URL would become a local folder)."""
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", os.fspath(workdir)):
        raise ValueError(
            f"--workdir={os.fspath(workdir)}: URLs are not supported; give a path on a file system that every "
            "process sees (e.g. a gcsfuse, Filestore or NFS mount)"
        )


# Integer settings and their smallest valid value.
_MIN_INTEGERS = (
    ("train", "num_steps", 1),
    ("train", "warmup_steps", 0),
    ("train", "max_consecutive_skipped_steps", 1),
    ("data", "batch_size", 1),
    ("data", "worker_count", 0),
    ("checkpoint", "every_steps", 1),
    ("checkpoint", "keep", 1),
    ("log", "every_steps", 1),
)


def check_positive_settings(config: Any) -> None:
    """Step counts, intervals and sizes with a smallest valid value, a learning rate that must be > 0 and a
    caption-dropout probability in [0, 1]."""
    for section, name, least in _MIN_INTEGERS:
        value = config[section][name]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"config {section}.{name}={value!r}; expected an integer >= {least}")
    dropout = config.data.caption_dropout
    if not isinstance(dropout, int | float) or not 0 <= dropout <= 1:
        raise ValueError(f"config data.caption_dropout={dropout!r}; expected a number in [0, 1]")
    rate = config.train.learning_rate
    if not isinstance(rate, int | float) or not rate > 0:
        raise ValueError(f"config train.learning_rate={rate!r}; expected a number > 0")
    gamma = config.train.get("min_snr_gamma")
    if gamma is not None and (not isinstance(gamma, int | float) or not gamma > 0):
        raise ValueError(f"config train.min_snr_gamma={gamma!r}; expected > 0, or None for no min-SNR weighting")


def check_noise_schedule(config: Any) -> None:
    """`train.prediction_type` and `train.noise_schedule` must be those the frozen UNet was trained with:
    the SDXL folder's `scheduler/scheduler_config.json` when the run has one, read as diffusers reads it
    (its defaults for missing keys)."""
    folder = config.model.get("sdxl_folder")
    if not folder:
        return
    path = os.path.join(os.path.expanduser(folder), "scheduler", "scheduler_config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        try:
            unet_schedule = schedulers.SchedulerConfig.from_diffusers(json.load(f))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    if config.train.prediction_type != unet_schedule.prediction_type:
        raise ValueError(
            f"config train.prediction_type={config.train.prediction_type!r}, but the UNet's scheduler ({path}) "
            f"has prediction_type={unet_schedule.prediction_type!r}: the ControlNets must be trained for the "
            "UNet's parameterisation"
        )
    schedule = schedulers.SchedulerConfig(**dict(config.train.noise_schedule))  # with its defaults filled in
    for key in _SCHEDULE_FIELDS:
        if getattr(schedule, key) != getattr(unet_schedule, key):
            raise ValueError(
                f"config train.noise_schedule.{key}={getattr(schedule, key)!r}, but the UNet's scheduler ({path}) "
                f"has {key}={getattr(unet_schedule, key)!r}"
            )
